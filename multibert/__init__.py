"""multibert: BERT-family models beyond plain text.

One shared BERT encoder (:mod:`multibert.backbone`), pluggable input adapters (:mod:`multibert.adapters`) in front
of it and objectives (:mod:`multibert.heads`, :mod:`multibert.losses`, :mod:`multibert.objectives`) behind it.
Lightning lives only in :mod:`multibert.tasks` and :mod:`multibert.cli`; the ``nn.Module`` code imports torch alone.

Shape letters used in every docstring and comment:

====  =====================================
B     batch
T     tokens (sequence length)
H     hidden size
nh    attention heads
hs    head size (H // nh)
V     vocabulary
K     visual words
N     graph nodes
E     graph edges
C     codes in a visit
M     masked positions in a batch
====  =====================================
"""

from multibert.config import BertConfig

__all__ = ["BertConfig"]
__version__ = "0.1.0"
