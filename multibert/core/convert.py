"""Hugging Face BERT checkpoints in and out, through one explicit key map with shape checks.

Our layout (the state dict of any task that holds an ``encoder`` and, optionally, the pretraining objectives)::

    encoder.adapter.{word,position,token_type}_embeddings.weight   bert.embeddings.*
    encoder.adapter.LayerNorm.{weight,bias}                        bert.embeddings.LayerNorm.*
    encoder.backbone.blocks.{i}.attn.qkv.{weight,bias}             bert.encoder.layer.{i}.attention.self.{query,key,value}.*  (concatenated)
    encoder.backbone.blocks.{i}.attn.proj.*                        bert.encoder.layer.{i}.attention.output.dense.*
    encoder.backbone.blocks.{i}.attn_norm.*                        bert.encoder.layer.{i}.attention.output.LayerNorm.*
    encoder.backbone.blocks.{i}.mlp.fc.*                           bert.encoder.layer.{i}.intermediate.dense.*
    encoder.backbone.blocks.{i}.mlp.proj.*                         bert.encoder.layer.{i}.output.dense.*
    encoder.backbone.blocks.{i}.mlp_norm.*                         bert.encoder.layer.{i}.output.LayerNorm.*
    encoder.pooler.dense.*                                         bert.pooler.dense.*
    mlm.head.{dense,LayerNorm}.*                                   cls.predictions.transform.{dense,LayerNorm}.*
    mlm.head.bias                                                  cls.predictions.bias
    pair.head.classifier.*                                         cls.seq_relationship.*

The MLM decoder weight is the word embedding (tied) and is never stored twice. Checkpoints saved from a bare
``BertModel`` (no ``bert.`` prefix) and TensorFlow-era names (``gamma`` / ``beta``) are accepted.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multibert.core.config import BertConfig

log = logging.getLogger(__name__)

_EMBEDDINGS = ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm")
_BLOCK = {
    "attention.output.dense": "attn.proj",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "mlp.fc",
    "output.dense": "mlp.proj",
    "output.LayerNorm": "mlp_norm",
}
_HEADS = {
    "bert.pooler.dense": "encoder.pooler.dense",
    "cls.predictions.transform.dense": "mlm.head.dense",
    "cls.predictions.transform.LayerNorm": "mlm.head.LayerNorm",
    "cls.seq_relationship": "pair.head.classifier",
}
#: Architecture fields that must agree between a checkpoint and the config it is loaded into.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
)


def read_hf_checkpoint(directory: str | Path) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """Read a Hugging Face BERT directory: ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin``).

    The ``.bin`` fallback is read with ``weights_only=True``, so it cannot run code.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{directory} has no config.json; a Hugging Face BERT directory needs one")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type", "bert") != "bert":
        raise ValueError(f"{config_file}: model_type={hf_config['model_type']!r}, expected 'bert'")
    if (directory / "model.safetensors").is_file():
        state = load_file(directory / "model.safetensors")
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin")
    return BertConfig.from_hf_dict(hf_config), state


def check_architecture(ours: BertConfig, theirs: BertConfig, source: str) -> None:
    """Raise if the fields that shape the weights differ, naming each field and both values."""
    diffs = [
        f"{name}: config has {getattr(ours, name)!r}, checkpoint has {getattr(theirs, name)!r}"
        for name in ARCHITECTURE_FIELDS
        if getattr(ours, name) != getattr(theirs, name)
    ]
    if diffs:
        hint = ""
        if any(d.startswith("vocab_size") for d in diffs):
            hint = f"; for vocab_size, tokenize with the checkpoint's vocabulary (--data.vocab_file {source}/vocab.txt)"
        raise ValueError(f"checkpoint {source} does not match the model config: " + "; ".join(diffs) + hint)


def _normalise_hf_key(key: str) -> str:
    key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if key.startswith(("embeddings.", "encoder.", "pooler.")):  # saved from a bare BertModel
        key = "bert." + key
    return key


def hf_to_multibert(state: dict[str, torch.Tensor], num_layers: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a Hugging Face BERT state dict to ours. Returns the mapped dict and the HF keys left unused."""
    state = {_normalise_hf_key(k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(hf: str, ours: str) -> None:
        if hf in state:
            out[ours] = state[hf]
            used.add(hf)

    for name in _EMBEDDINGS:
        for p in ("weight", "bias"):
            take(f"bert.embeddings.{name}.{p}", f"encoder.adapter.{name}.{p}")
    for i in range(num_layers):
        hf, ours = f"bert.encoder.layer.{i}.", f"encoder.backbone.blocks.{i}."
        for p in ("weight", "bias"):
            qkv = [f"{hf}attention.self.{n}.{p}" for n in ("query", "key", "value")]
            if all(k in state for k in qkv):
                out[f"{ours}attn.qkv.{p}"] = torch.cat([state[k] for k in qkv], dim=0)
                used.update(qkv)
            for hf_name, our_name in _BLOCK.items():
                take(f"{hf}{hf_name}.{p}", f"{ours}{our_name}.{p}")
    for hf_name, our_name in _HEADS.items():
        for p in ("weight", "bias"):
            take(f"{hf_name}.{p}", f"{our_name}.{p}")
    take("cls.predictions.bias", "mlm.head.bias")
    # tied to the word embedding (weight) and to cls.predictions.bias (bias): nothing of their own to load
    used.update(k for k in state if k.startswith("cls.predictions.decoder.") or k.endswith("position_ids"))
    return out, sorted(set(state) - used)


def multibert_to_hf(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_to_multibert` for the keys our state dict holds."""
    out: dict[str, torch.Tensor] = {}

    def give(ours: str, hf: str) -> None:
        if ours in state:
            out[hf] = state[ours].detach().cpu().contiguous()

    for name in _EMBEDDINGS:
        for p in ("weight", "bias"):
            give(f"encoder.adapter.{name}.{p}", f"bert.embeddings.{name}.{p}")
    for i in range(num_layers):
        hf, ours = f"bert.encoder.layer.{i}.", f"encoder.backbone.blocks.{i}."
        for p in ("weight", "bias"):
            if f"{ours}attn.qkv.{p}" in state:
                q, k, v = state[f"{ours}attn.qkv.{p}"].detach().cpu().chunk(3, dim=0)
                for n, t in zip(("query", "key", "value"), (q, k, v)):
                    out[f"{hf}attention.self.{n}.{p}"] = t.contiguous()
            for hf_name, our_name in _BLOCK.items():
                give(f"{ours}{our_name}.{p}", f"{hf}{hf_name}.{p}")
    for hf_name, our_name in _HEADS.items():
        for p in ("weight", "bias"):
            give(f"{our_name}.{p}", f"{hf_name}.{p}")
    give("mlm.head.bias", "cls.predictions.bias")
    return out


def load_into(module: torch.nn.Module, mapped: dict[str, torch.Tensor], source: str) -> list[str]:
    """Copy mapped tensors into ``module`` with a shape check per key; return our keys the checkpoint lacked."""
    own = module.state_dict()
    unknown = sorted(set(mapped) - set(own))
    if unknown:
        raise KeyError(f"{source}: keys with no place in the model: {unknown[:8]}")
    for key, value in mapped.items():
        if own[key].shape != value.shape:
            raise ValueError(f"{source}: {key} has shape {tuple(value.shape)}, the model expects {tuple(own[key].shape)}")
    module.load_state_dict(mapped, strict=False)
    tied = {"mlm.head.decoder.weight"}
    return sorted(k for k in set(own) - set(mapped) - tied if not k.startswith("teacher."))


def save_hf_checkpoint(
    module: torch.nn.Module, config: BertConfig, directory: str | Path, vocab_file: str | Path | None = None
) -> Path:
    """Write ``config.json``, ``model.safetensors`` (and ``vocab.txt``) that ``BertForPreTraining`` loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = multibert_to_hf(module.state_dict(), config.num_hidden_layers)
    if "bert.embeddings.word_embeddings.weight" not in state:
        raise ValueError("only models with a text-style token embedding export to Hugging Face BERT")
    (directory / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    if vocab_file is not None:
        shutil.copyfile(vocab_file, directory / "vocab.txt")
    log.info("exported %d tensors to %s", len(state), directory)
    return directory
