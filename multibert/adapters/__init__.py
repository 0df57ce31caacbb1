"""Input adapters: each turns one modality's batch into ``(embeddings, attention_mask, token_type_ids)``."""

from multibert.adapters.base import Adapter, AdapterFactory, AdapterOutput
from multibert.adapters.text import TextAdapter

__all__ = ["Adapter", "AdapterFactory", "AdapterOutput", "TextAdapter"]
