"""TinyBERT's data augmentation for task distillation (Jiao et al., 2020, §3.3 and Algorithm 1):
``multibert augment``.

For each example, every word is, with probability ``replace_prob`` (p_t = 0.4), replaced by one of ``top_k``
(K = 15) candidates, ``num_augmented`` (N_a = 20) times. The candidates of a single-piece word are a masked-LM's
top-K predictions with that word masked (one forward pass per word, batched). The augmented file keeps the
input's format and fields (labels travel unchanged); each input record is followed by its distinct augmented
copies, whose ``id`` (when the records have one) gets a ``-augN`` suffix.

Deviations, on purpose:

- The paper replaces *multi-piece* words by their nearest GloVe neighbours; no word vectors ship here, so
  multi-piece words are kept as they are (counted and logged).
- Candidates exclude special tokens, ``##`` continuation pieces, non-alphanumeric tokens and the word itself, so
  a replacement is always a whole word.
- Replacements are spliced into the original string at the word's character offsets, so untouched text keeps its
  case and spacing; the replacement itself is the vocabulary's spelling (lower case for uncased models).
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from datamodules.tokenizer import SPECIAL_TOKENS, load_wordpiece
from multibert.core.batch import IGNORE_INDEX, TokenBatch
from multibert.core.checkpoint import checkpoint_vocab
from multibert.core.convert import hf_to_multibert, read_hf_checkpoint
from multibert.core.pretraining import PretrainingTask
from multibert.core.task import EncoderTask

log = logging.getLogger(__name__)

_FORMATS = (".jsonl", ".csv", ".tsv", ".txt")


@dataclass
class Word:
    """A replaceable word: its character span in the text and its token position in the model input."""

    start: int
    end: int
    position: int
    token_id: int


def read_records(path: Path, text_field: str) -> tuple[list[dict], list[str] | None]:
    """Records of a ``.jsonl`` / ``.csv`` / ``.tsv`` file (or lines of a ``.txt``) and the CSV column order."""
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"{path}: unsupported format {suffix!r}; expected one of {_FORMATS}")
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    with open(path, encoding="utf-8", newline="") as f:
        if suffix == ".txt":
            return [{text_field: line.rstrip("\n")} for line in f if line.strip()], None
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if reader.fieldnames is None or text_field not in reader.fieldnames:
                raise ValueError(f"{path}: no column {text_field!r} (columns: {reader.fieldnames}); set --text_field")
            return list(reader), list(reader.fieldnames)
        records = []
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise ValueError(f"{path}:{n}: expected an object with a string field {text_field!r}")
            records.append(record)
        return records, None


def write_records(path: Path, records: list[dict], columns: list[str] | None, text_field: str) -> None:
    """Write records in the format named by ``path``'s suffix (the input's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    with open(path, "w", encoding="utf-8", newline="") as f:
        if suffix == ".txt":
            f.writelines(r[text_field].replace("\n", " ") + "\n" for r in records)
        elif suffix in (".csv", ".tsv"):
            writer = csv.DictWriter(f, fieldnames=columns, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(records)
        else:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


class MLMCandidates:
    """Top-K masked-LM replacements for single-piece words.

    Args:
        model: an ``nn.Module`` with ``encoder`` (text adapter) and ``mlm`` (:class:`~multibert.core.objectives.MaskedLM`).
        tokenizer: the model's WordPiece tokenizer.
        top_k: candidates per word.
        max_seq_length: model input length (``[CLS]`` and ``[SEP]`` included); words beyond it are kept.
        batch_size: masked copies per forward pass.
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``, ...).
    """

    def __init__(
        self, model: torch.nn.Module, tokenizer, top_k: int = 15, max_seq_length: int = 128, batch_size: int = 64,
        device: str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.max_tokens = max_seq_length - 2
        self.batch_size = batch_size
        vocab = tokenizer.get_vocab()
        self.special = {t: vocab[t] for t in SPECIAL_TOKENS}
        allowed = np.zeros(len(vocab), dtype=bool)
        for token, i in vocab.items():
            special = token.startswith("[") and token.endswith("]")
            allowed[i] = not token.startswith("##") and not special and token.isalnum()
        self.allowed = torch.from_numpy(allowed)
        self.vocab = {i: t for t, i in vocab.items()}
        self.multi_piece = 0

    def words(self, text: str) -> tuple[list[int], list[Word]]:
        """Model input ids (``[CLS] … [SEP]``) and the single-piece words among them."""
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        ids = enc.ids[: self.max_tokens]
        pieces: dict[int, list[int]] = {}
        for position, word in enumerate(enc.word_ids[: len(ids)]):
            if word is not None:
                pieces.setdefault(word, []).append(position)
        words = []
        for positions in pieces.values():
            if len(positions) > 1:
                self.multi_piece += 1  # the paper would ask GloVe here; kept unchanged
                continue
            (p,) = positions
            if self.allowed[ids[p]]:
                start, end = enc.offsets[p]
                words.append(Word(start, end, p + 1, ids[p]))  # +1: after [CLS]
        return [self.special["[CLS]"], *ids, self.special["[SEP]"]], words

    @torch.no_grad()
    def candidates(self, inputs: list[tuple[list[int], Word]]) -> list[list[str]]:
        """For each (input ids, word): the top-K replacement tokens with that word masked."""
        out: list[list[str]] = []
        for b in range(0, len(inputs), self.batch_size):
            chunk = inputs[b : b + self.batch_size]
            T = max(len(ids) for ids, _ in chunk)
            B = len(chunk)
            input_ids = torch.zeros(B, T, dtype=torch.long)
            attention = torch.zeros(B, T, dtype=torch.long)
            labels = torch.full((B, T), IGNORE_INDEX)
            for i, (ids, word) in enumerate(chunk):
                input_ids[i, : len(ids)] = torch.tensor(ids)
                attention[i, : len(ids)] = 1
                input_ids[i, word.position] = self.special["[MASK]"]
                labels[i, word.position] = word.token_id
            batch = TokenBatch(*(t.to(self.device) for t in (input_ids, attention, torch.zeros_like(input_ids), labels)))
            logits = self.model.mlm(self.model.encoder(batch), batch).logits.float().cpu()  # (B, V): one masked row each
            logits[:, ~self.allowed] = float("-inf")
            for i, (_, word) in enumerate(chunk):
                logits[i, word.token_id] = float("-inf")  # a replacement must differ from the word
            top = logits.topk(self.top_k, dim=-1).indices  # (B, K)
            out.extend([self.vocab[int(t)] for t in row] for row in top)
        return out


def augment_text(
    text: str, words: list[Word], candidates: list[list[str]], replace_prob: float, rng: np.random.Generator
) -> str:
    """One augmented copy: each word replaced with probability ``replace_prob`` by a random candidate."""
    pieces, last = [], 0
    for word, options in zip(words, candidates):
        if options and rng.random() < replace_prob:
            pieces += [text[last : word.start], options[int(rng.integers(len(options)))]]
            last = word.end
    return "".join(pieces) + text[last:]


def load_mlm_model(model: str) -> tuple[torch.nn.Module, str | None]:
    """A masked-LM from a Hugging Face BERT directory (with ``cls.predictions.*``) or a multibert ``.ckpt``, and
    the text of its vocabulary (the directory's ``vocab.txt``; the one stored in the checkpoint), if any."""
    path = Path(model)
    if path.is_dir():
        config, state = read_hf_checkpoint(path)
        if "mlm.head.dense.weight" not in hf_to_multibert(state, config.num_hidden_layers)[0]:
            raise ValueError(f"{path} has no masked-LM head (cls.predictions.*); augmentation needs one")
        task = PretrainingTask(config, pair_weight=0.0)
        task.load_pretrained(path)
        vocab = path / "vocab.txt"
        return task, vocab.read_text(encoding="utf-8") if vocab.is_file() else None
    task = EncoderTask.from_checkpoint(path)
    if getattr(task, "mlm", None) is None:
        raise ValueError(f"{path} ({type(task).__name__}) has no masked-LM head (mlm); augmentation needs one")
    return task, checkpoint_vocab(path)


def _tokenizer(vocab_file: str | None, vocab_text: str | None, model: str, lowercase: bool):
    if vocab_file is not None:
        return load_wordpiece(vocab_file, lowercase=lowercase)
    if vocab_text is None:
        raise ValueError(f"{model} carries no vocabulary; pass --vocab_file")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vocab.txt"
        path.write_text(vocab_text, encoding="utf-8")
        return load_wordpiece(path, lowercase=lowercase)


def augment_file(
    *,
    input: str,
    out: str,
    model: str,
    vocab_file: str | None = None,
    lowercase: bool = True,
    text_field: str = "text",
    id_field: str = "id",
    num_augmented: int = 20,
    replace_prob: float = 0.4,
    top_k: int = 15,
    max_seq_length: int = 128,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 42,
) -> None:
    """Augment a text (classification) file with TinyBERT's masked-LM word replacement (``multibert augment``).

    Args:
        input: ``.jsonl`` / ``.csv`` / ``.tsv`` records with a text field, or ``.txt`` with one example per line.
        out: the augmented file (same format): each record followed by its distinct augmented copies.
        model: a masked-LM: a Hugging Face BERT directory with its MLM head, or a multibert pretraining ``.ckpt``.
        vocab_file: the model's WordPiece vocabulary (default: the directory's ``vocab.txt`` / the checkpoint's).
        lowercase: lower-case input (uncased models).
        text_field: the text column / key.
        id_field: the id column / key; augmented copies get ``<id>-aug<N>``.
        num_augmented: augmented copies tried per record (N_a; the paper: 20); duplicates are dropped.
        replace_prob: probability of replacing each word (p_t; the paper: 0.4).
        top_k: candidates per word (K; the paper: 15).
        max_seq_length: model input length; words beyond it are never replaced.
        batch_size: masked copies per forward pass.
        device: where the masked LM runs (``cpu``, ``cuda``, ...).
        seed: seeds the replacement draws.
    """
    net, vocab_text = load_mlm_model(model)
    tokenizer = _tokenizer(vocab_file, vocab_text, model, lowercase)
    if tokenizer.get_vocab_size() != net.config.vocab_size:
        raise ValueError(
            f"the vocabulary has {tokenizer.get_vocab_size()} tokens but {model} has vocab_size={net.config.vocab_size}"
        )
    source = Path(input)
    records, columns = read_records(source, text_field)
    masker = MLMCandidates(net, tokenizer, top_k, max_seq_length, batch_size, device)
    rng = np.random.default_rng(seed)
    result, added, no_words = [], 0, 0
    for start in tqdm(range(0, len(records), batch_size), desc="augmenting", unit="batch"):
        chunk = records[start : start + batch_size]
        parsed = [masker.words(str(r[text_field])) for r in chunk]
        queries = [(ids, w) for ids, words in parsed for w in words]
        found = iter(masker.candidates(queries))
        for record, (_, words) in zip(chunk, parsed):
            options = [next(found) for _ in words]
            result.append(record)
            if not words:
                no_words += 1
                continue
            seen = {record[text_field]}
            for k in range(num_augmented):
                text = augment_text(record[text_field], words, options, replace_prob, rng)
                if text in seen:
                    continue
                seen.add(text)
                copy = {**record, text_field: text}
                if id_field in record and record[id_field] not in (None, ""):
                    copy[id_field] = f"{record[id_field]}-aug{k}"
                result.append(copy)
                added += 1
    write_records(Path(out), result, columns, text_field)
    print(
        f"wrote {len(result)} records ({len(records)} originals + {added} augmented) to {out}; "
        f"{no_words} records without a replaceable word, {masker.multi_piece} multi-piece words kept unchanged"
    )

