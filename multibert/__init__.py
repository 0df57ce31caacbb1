"""multibert: BERT-family models beyond plain text.

One shared BERT encoder, pluggable input adapters in front of it, objectives behind it, and one ``multibert``
command. The code is cut into four layers; a layer imports only the layers below it (``import-linter`` checks this
in CI: the ``[tool.importlinter]`` contracts in ``pyproject.toml``, run by ``tests/test_architecture.py``):

==========  ===============================================  ==================================================
layer       packages                                         what lives there
==========  ===============================================  ==================================================
commands    :mod:`multibert.cli`, :mod:`multibert.commands`  the ``multibert`` command and the commands that
                                                             join a model with data (export, zero-shot, ...)
data        :mod:`datamodules`                               datasets, collators, LightningDataModules, one
                                                             folder per data family (text, video, ehr, finetune)
families    :mod:`multibert.video`, :mod:`multibert.gbert`,  one folder per model family: its adapter, heads,
            :mod:`multibert.finetune`,                       losses, metrics, batch types, task and the
            :mod:`multibert.distill`                         model-side parts of its preparation; families do
                                                             not import each other
core        :mod:`multibert.core`                            config, backbone, encoder, the adapter contract,
                                                             the text adapter, shared heads / losses /
                                                             objectives, the token batch, conversion,
                                                             optimisation, checkpoints, the task base and BERT's
                                                             MLM + pair pretraining task
==========  ===============================================  ==================================================

The typed batches are the contract between data and tasks: :class:`~multibert.core.batch.TokenBatch` in the core,
each family's own batches in its folder (``multibert/gbert/batch.py``, ``multibert/finetune/batch.py``); the data
layer builds them, the tasks read them. A piece that serves two layers (the WordPiece vocabulary, the ICD-9 / ATC
trees, video decoding) lives in the lower one. Model files (``nn.Module`` s) import torch, torch_geometric and
torchvision only; Lightning appears in tasks, datamodules and commands.

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

from multibert.core.config import BertConfig

__all__ = ["BertConfig"]
__version__ = "0.1.0"
