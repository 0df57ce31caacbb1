"""What the fine-tuning datamodules share: the WordPiece tokenizer (a checkpoint's ``vocab.txt``, or one trained on
the training split and cached), split files, DataLoaders, and the vocabulary stored inside every checkpoint.

Subclasses read their format in :meth:`read_split` (a list of examples) and batch them in :meth:`collate`.

``__init__`` only stores and checks the arguments. The values the CLI links into the model (vocabulary size,
labels) are computed on first read and cached: the vocabulary is loaded, or trained on the training split, then.
The training order is a pure function of ``(seed, epoch)`` (a ``DistributedSampler``, which Lightning keeps and
calls ``set_epoch`` on) read through torchdata's ``StatefulDataLoader``, so a checkpoint taken mid-epoch records
the position in the epoch and a resumed run continues with exactly the batches an uninterrupted one would see.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from tokenizers import BertWordPieceTokenizer
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules import default_cache_dir, resolve_path
from datamodules.sampling import EpochSampler
from datamodules.tokenizer import load_wordpiece, train_wordpiece
from multibert.core.hub import looks_like_hub_id, resolve_pretrained

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "predict")


def check_vocab_source(source: str, what: str = "data.vocab_file") -> None:
    """Cheap check of a vocabulary argument: a ``vocab.txt``, a directory holding one, or a Hugging Face hub id."""
    path = resolve_path(source)
    if path.is_dir() and not (path / "vocab.txt").is_file():
        raise FileNotFoundError(f"{what} {path} is a directory without vocab.txt")
    if not path.exists() and not looks_like_hub_id(str(source)):
        raise FileNotFoundError(f"{what} file {path} does not exist")


def vocab_file_of(source: str, what: str = "data.vocab_file") -> Path:
    """The ``vocab.txt`` a vocabulary argument names (a hub id is resolved through the Hugging Face cache)."""
    path = resolve_path(source)
    if not path.exists():
        path = resolve_pretrained(source, what)
    return path / "vocab.txt" if path.is_dir() else path


def check_file(path: str | Path, what: str) -> Path:
    """``path`` (shipped data such as ``datamodules/data/wordnet/...`` resolves from any working directory)."""
    path = resolve_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return path


def pad_rows(
    ids: list[list[int]], types: list[list[int]], pad_id: int, multiple_of: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids``, ``token_type_ids``, ``attention_mask`` (each (R, T)) of R rows padded to the longest row,
    rounded up to ``multiple_of``."""
    T = -(-max(len(r) for r in ids) // multiple_of) * multiple_of
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(ids), T), dtype=torch.long)
    attention_mask = torch.zeros((len(ids), T), dtype=torch.long)
    for r, (row, row_types) in enumerate(zip(ids, types)):
        input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
        token_type_ids[r, : len(row)] = torch.tensor(row_types, dtype=torch.long)
        attention_mask[r, : len(row)] = 1
    return input_ids, token_type_ids, attention_mask


class FinetuneDataModule(pl.LightningDataModule):
    """Base class: tokenizer, split files and loaders.

    Args:
        train_file, val_file, test_file, predict_file: the split files (any may be ``None``).
        vocab_file: a WordPiece ``vocab.txt``, e.g. ``DIR/vocab.txt`` of the checkpoint the model starts from (a
            Hugging Face directory or hub id stands for its ``vocab.txt``). Without one, a vocabulary of
            ``train_vocab_size`` tokens is trained on the training split (on first use) and cached.
        train_vocab_size: size of that vocabulary.
        lowercase: lower-case and strip accents (uncased checkpoints).
        max_seq_length: tokens per row, ``[CLS]`` and ``[SEP]`` included.
        batch_size: examples per batch and device.
        num_workers: DataLoader workers.
        predictions_out: where ``multibert predict`` writes the predictions for ``predict_file`` (default:
            ``predictions.json[l]`` in the run's log directory).
        seed: seeds the order of the training examples (with the epoch).
        cache_dir: where trained vocabularies go (default ``$MULTIBERT_CACHE`` or ``~/.cache/multibert``).
    """

    model_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size"}

    def __init__(
        self,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        vocab_file: str | None = None,
        train_vocab_size: int = 8000,
        lowercase: bool = True,
        max_seq_length: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        predictions_out: str | None = None,
        seed: int = 42,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.predictions_out = predictions_out
        self.files = {
            split: check_file(f, f"data.{split}_file") if f else None
            for split, f in zip(SPLITS, (train_file, val_file, test_file, predict_file))
        }
        if max_seq_length < 8:
            raise ValueError(f"data.max_seq_length={max_seq_length} is too short (at least 8)")
        if vocab_file:
            check_vocab_source(vocab_file)
        elif self.files["train"] is None:
            raise ValueError("give data.vocab_file (e.g. CHECKPOINT_DIR/vocab.txt) or data.train_file to train one on")
        self.vocab_file = vocab_file
        self.train_vocab_size = train_vocab_size
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.lowercase = lowercase
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.datasets: dict[str, list] = {}
        self._has_labels = False
        self._given_labels: list[str] | None = None

    # ----------------------------------------------------------------- a label vocabulary (classes, tags)
    def keep_labels(self, labels: list[str] | None, what: str = "label") -> None:
        """For data with a label vocabulary: store the given one (checked), or read it from the training split on
        first use (:meth:`training_labels`)."""
        if labels is None and self.files["train"] is None:
            raise ValueError(f"give data.train_file (the {what} vocabulary is built from it) or data.labels")
        if labels is not None and len(set(labels)) != len(labels):
            raise ValueError(f"data.labels has duplicates: {labels}")
        self._has_labels = True
        self._given_labels = list(labels) if labels is not None else None

    def training_labels(self) -> list[str]:
        """The label vocabulary of the training split (data with labels override this)."""
        raise NotImplementedError

    @functools.cached_property
    def labels(self) -> list[str] | None:
        """The label vocabulary (a model link): ``data.labels``, or the training split's (read on first use);
        ``None`` for data without labels."""
        if not self._has_labels:
            return None
        return self._given_labels if self._given_labels is not None else self.training_labels()

    @functools.cached_property
    def label_index(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    # ----------------------------------------------------------------- the vocabulary, on first use
    @functools.cached_property
    def vocab_path(self) -> Path:
        """The ``vocab.txt`` in use: the given one, or one trained on the training split (cached by content key)."""
        if self.vocab_file:
            return vocab_file_of(self.vocab_file)
        return self._trained_vocab(self.train_vocab_size)

    @functools.cached_property
    def tokenizer(self) -> BertWordPieceTokenizer:
        return load_wordpiece(self.vocab_path, lowercase=self.lowercase)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def cls_id(self) -> int:
        return self.tokenizer.token_to_id("[CLS]")

    @property
    def sep_id(self) -> int:
        return self.tokenizer.token_to_id("[SEP]")

    @property
    def pad_id(self) -> int:
        return self.tokenizer.token_to_id("[PAD]")

    def prepare_data(self) -> None:
        self.vocab_path  # noqa: B018  (trains the vocabulary once, on the first process, if there is none yet)

    # ----------------------------------------------------------------- to be provided by a subclass
    def training_texts(self) -> list[str]:
        """The texts a new vocabulary is trained on (the training split's)."""
        raise NotImplementedError

    def read_split(self, split: str, path: Path) -> list:
        """The examples of one split file, ready for :meth:`collate`."""
        raise NotImplementedError

    def collate(self, examples: list) -> Any:
        raise NotImplementedError

    # ----------------------------------------------------------------- shared
    def _trained_vocab(self, size: int) -> Path:
        train = self.files["train"]
        st = os.stat(train)
        key = hashlib.sha1(f"{type(self).__name__}|{size}|{self.lowercase}|{train.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        path = self.cache_dir / "vocab" / key.hexdigest()[:16] / "vocab.txt"
        if not path.is_file():
            log.info("training a %d-token WordPiece vocabulary on %s", size, train)
            train_wordpiece(self.training_texts(), size, path, self.lowercase)
        return path

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for split in wanted.get(stage, SPLITS) if stage else SPLITS:
            if split not in self.datasets and self.files[split] is not None:
                self.datasets[split] = self.read_split(split, self.files[split])
                log.info("%s: %d %s examples from %s", type(self).__name__, len(self.datasets[split]), split, self.files[split])

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} data: give data.{split}_file")
        options = dict(batch_size=self.batch_size, collate_fn=self.collate, num_workers=self.num_workers,
                       persistent_workers=self.num_workers > 0)
        if not train:
            return DataLoader(self.datasets[split], shuffle=False, **options)
        # the order is a function of (seed, epoch); under DDP each rank reads its own shard of it
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = EpochSampler(self.datasets[split], self.batch_size, seed=self.seed, num_replicas=world, rank=rank)
        return StatefulDataLoader(self.datasets[split], sampler=sampler, **options)

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.files["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def state_dict(self) -> dict[str, Any]:
        """The vocabulary (and a label vocabulary, where the data has one) travel inside every checkpoint."""
        state: dict[str, Any] = {"vocab": self.vocab_path.read_text(encoding="utf-8")}
        if getattr(self, "labels", None) is not None:
            state["labels"] = list(self.labels)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rerun = (
            "run the command with --ckpt_path and no data config or data flags (the training data settings are "
            "restored from the checkpoint), or with -c RUN_FOLDER/config.yaml"
        )
        if state.get("vocab") is not None and state["vocab"] != self.vocab_path.read_text(encoding="utf-8"):
            raise ValueError(
                f"the checkpoint was trained with a different vocabulary than {self.vocab_path}; use the same "
                f"data.vocab_file (or the same training file and train_vocab_size): {rerun}"
            )
        ours = getattr(self, "labels", None)
        if state.get("labels") is not None and ours is not None and list(state["labels"]) != list(ours):
            raise ValueError(
                f"the checkpoint's label vocabulary ({len(state['labels'])} labels: {state['labels'][:5]}...) differs "
                f"from this data's ({len(ours)}: {list(ours)[:5]}...); pass data.labels or the same train_file: {rerun}"
            )
