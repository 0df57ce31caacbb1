"""What the fine-tuning datamodules share: the WordPiece tokenizer (a checkpoint's ``vocab.txt``, or one trained on
the training split and cached), split files, DataLoaders, and the vocabulary stored inside every checkpoint.

Subclasses read their format in :meth:`read_split` (a list of examples) and batch them in :meth:`collate`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from datamodules import default_cache_dir, resolve_path
from datamodules.tokenizer import load_wordpiece, train_wordpiece

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "predict")


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
        vocab_file: a WordPiece ``vocab.txt``, e.g. ``DIR/vocab.txt`` of the checkpoint the model starts from.
            Without one, a vocabulary of ``train_vocab_size`` tokens is trained on the training split and cached.
        train_vocab_size: size of that vocabulary.
        lowercase: lower-case and strip accents (uncased checkpoints).
        max_seq_length: tokens per row, ``[CLS]`` and ``[SEP]`` included.
        batch_size: examples per batch and device.
        num_workers: DataLoader workers.
        predictions_out: where ``multibert predict`` writes the predictions for ``predict_file`` (default:
            ``predictions.json[l]`` in the run's log directory).
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
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.lowercase = lowercase
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if vocab_file:
            self.vocab_path = check_file(vocab_file, "data.vocab_file")
        else:
            self.vocab_path = self._trained_vocab(train_vocab_size)
        self.tokenizer = load_wordpiece(self.vocab_path, lowercase=lowercase)
        self.vocab_size = self.tokenizer.get_vocab_size()
        vocab = self.tokenizer.get_vocab()
        self.cls_id, self.sep_id, self.pad_id = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
        self.datasets: dict[str, list] = {}

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
        if train is None:
            raise ValueError("give data.vocab_file (e.g. CHECKPOINT_DIR/vocab.txt) or data.train_file to train one on")
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

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"no {split} data: give data.{split}_file")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.files["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """The vocabulary (and a label vocabulary, where the data has one) travel inside every checkpoint."""
        state: dict[str, Any] = {"vocab": self.vocab_path.read_text(encoding="utf-8")}
        if getattr(self, "labels", None) is not None:
            state["labels"] = list(self.labels)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("vocab") is not None and state["vocab"] != self.vocab_path.read_text(encoding="utf-8"):
            raise ValueError(
                f"the checkpoint was trained with a different vocabulary than {self.vocab_path}; "
                "use the same data.vocab_file (or the same training file and train_vocab_size)"
            )
        ours = getattr(self, "labels", None)
        if state.get("labels") is not None and ours is not None and list(state["labels"]) != list(ours):
            raise ValueError(
                f"the checkpoint's label vocabulary ({len(state['labels'])} labels: {state['labels'][:5]}...) differs "
                f"from this data's ({len(ours)}: {list(ours)[:5]}...); pass data.labels or the same train_file"
            )
