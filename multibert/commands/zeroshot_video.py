"""Zero-shot action classification by filling in the blanks (VideoBERT, Sun et al., ICCV 2019, arXiv 1904.01766,
Sec. 4.3): the text ``now let me show you how to [MASK] the [MASK]`` followed by ``[>]`` and the visual words of a
clip; the verb is read off the first ``[MASK]``'s predicted distribution and the noun off the second's.

Scoring (``scoring``):

- ``open`` (default, the paper's): the ground-truth verb / noun is ranked among the model's **whole text
  vocabulary** (every WordPiece token except the special tokens; ``[>]`` and the visual words are not words), top-1
  and top-5 accuracy; chance is 1 / (that many tokens).
- ``closed``: ranked among the candidate labels only (``verbs`` / ``nouns``, by default every label of the file);
  chance is 1 / (number of labels). An easier test than the paper's, named as such in the output.

The **language prior** baseline the paper reports is scored the same way: the same template with the video removed
(``[CLS] template [SEP]``), so one prediction serves every clip; a model that uses the video beats it.

A label that WordPiece splits into several pieces is scored by its first piece (one ``[MASK]`` holds one piece, as
in the paper's template); such labels are counted and logged. Labelled clips come as JSON lines
``{"video_id": ..., "start": s, "end": e, "verb": ..., "noun": ...}``; a clip's visual words are those whose clip
midpoint falls in ``[start, end)`` in the tokenized folder (tokenize held-out videos with the training codebook:
``multibert tokenize-video --codebook <train tokens>/codebook.safetensors``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from datamodules import resolve_path
from datamodules.tokenizer import load_wordpiece
from datamodules.video.examples import (
    Example,
    VideoVocab,
    collate,
    layout,
    video_vocab,
)
from multibert.core.batch import IGNORE_INDEX, TokenBatch
from multibert.core.pretraining import PretrainingTask
from multibert.video.adapter import VideoAdapter
from multibert.video.quantize import HierarchicalKMeans
from multibert.video.tokenize import read_words

log = logging.getLogger(__name__)

TEMPLATE = "now let me show you how to [MASK] the [MASK]"


@dataclass(frozen=True)
class LabelledClip:
    video_id: str
    start: float
    end: float
    verb: str
    noun: str


def read_labels(path: str | Path) -> list[LabelledClip]:
    """Labelled clips from a JSON-lines file; each line needs video_id, start, end, verb, noun."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"video_id", "start", "end", "verb", "noun"} - set(row)
        if missing:
            raise KeyError(f"{path}:{n}: missing fields {sorted(missing)}")
        out.append(LabelledClip(str(row["video_id"]), float(row["start"]), float(row["end"]), row["verb"], row["noun"]))
    if not out:
        raise ValueError(f"{path} holds no labelled clip")
    return out


def template_ids(tokenizer, template: str, mask_id: int) -> tuple[np.ndarray, list[int]]:
    """WordPiece ids of a template with ``[MASK]`` slots, and the slots' offsets in it."""
    ids: list[int] = []
    slots: list[int] = []
    parts = template.split("[MASK]")
    for i, part in enumerate(parts):
        ids += tokenizer.encode(part, add_special_tokens=False).ids if part.strip() else []
        if i < len(parts) - 1:
            slots.append(len(ids))
            ids.append(mask_id)
    return np.asarray(ids, dtype=np.int64), slots


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SCORINGS = ("open", "closed")


def label_ids(tokenizer, labels: list[str]) -> tuple[torch.Tensor, int]:
    """First WordPiece id of each label, and how many labels have more than one piece."""
    ids, split = [], 0
    for label in labels:
        pieces = tokenizer.encode(label, add_special_tokens=False).ids
        if not pieces:
            raise ValueError(f"label {label!r} has no WordPiece token")
        split += len(pieces) > 1
        ids.append(pieces[0])
    return torch.tensor(ids), split


def open_vocabulary(tokenizer, vocab: VideoVocab) -> torch.Tensor:
    """Ids open-vocabulary scoring ranks: every WordPiece token but the special ones. Shape: (C,)."""
    special = {tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
    return torch.tensor([i for i in range(vocab.text_size) if i not in special])


def topk_hits(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> dict[int, int]:
    """How many rows rank their target within the top k (a target outside ``[0, C)`` never does).

    Shapes: scores (N, C), targets (N,).
    """
    order = scores.argsort(dim=1, descending=True)  # (N, C)
    found = order == targets[:, None]  # (N, C)
    rank = torch.where(found.any(1), found.float().argmax(1), scores.size(1))  # (N,)
    return {k: int((rank < k).sum()) for k in ks}


@torch.inference_mode()
def fill_in_blank(task, batch: TokenBatch, mask_positions: torch.Tensor) -> torch.Tensor:
    """Masked-LM logits at one position per example. Shapes: mask_positions (B,) → (B, V)."""
    encoded = task.encoder(batch)
    hidden = encoded.last_hidden_state[torch.arange(len(batch)), mask_positions]  # (B, H)
    return task.mlm.head(hidden)  # (B, V)


def evaluate_zeroshot(
    task,
    vocab: VideoVocab,
    tokenizer,
    clips: list[LabelledClip],
    words: dict[str, tuple[np.ndarray, np.ndarray]],
    clip_seconds: float,
    verbs: list[str] | None = None,
    nouns: list[str] | None = None,
    template: str = TEMPLATE,
    batch_size: int = 64,
    scoring: str = "open",
) -> dict[str, float | int | str]:
    """Top-1 / top-5 verb and noun accuracy of fill-in-the-blank over labelled clips, with the language prior.

    Args:
        verbs, nouns: the candidate labels of ``closed`` scoring (default: every label of ``clips``); ignored by
            ``open`` scoring except that clips whose labels are not listed are skipped when lists are given.
        scoring: ``open`` (rank among the whole text vocabulary, the paper's) or ``closed`` (among the labels).

    Returns:
        ``verb_top1`` … ``noun_top5``; ``prior_verb_top1`` … (the template without video);
        ``verb_chance_top1`` / ``noun_chance_top1``; ``clips``, ``skipped``, ``scoring``, ``candidates_verb`` /
        ``candidates_noun`` (how many entries each slot is ranked among).
    """
    if scoring not in SCORINGS:
        raise ValueError(f"scoring={scoring!r}; choose one of {SCORINGS}")
    text, slots = template_ids(tokenizer, template, vocab.mask)
    if len(slots) != 2:
        raise ValueError(f"the template needs two [MASK] slots (verb, noun), got {len(slots)}: {template!r}")
    listed_verbs, listed_nouns = verbs, nouns
    verbs = verbs or sorted({c.verb for c in clips})
    nouns = nouns or sorted({c.noun for c in clips})
    verb_ids, verb_split = label_ids(tokenizer, verbs)
    noun_ids, noun_split = label_ids(tokenizer, nouns)
    if verb_split or noun_split:
        log.warning(
            "%d verbs and %d nouns span several WordPieces; scored by their first piece", verb_split, noun_split
        )
    if scoring == "open":
        candidates = open_vocabulary(tokenizer, vocab)
        cand = {"verb": candidates, "noun": candidates}
    else:
        cand = {"verb": verb_ids, "noun": noun_ids}
    position = {name: {int(t): j for j, t in enumerate(c.tolist())} for name, c in cand.items()}
    examples, targets, skipped = [], [], 0
    for c in clips:
        unlisted = (listed_verbs and c.verb not in listed_verbs) or (listed_nouns and c.noun not in listed_nouns)
        if c.video_id not in words or unlisted or c.verb not in verbs or c.noun not in nouns:
            skipped += 1
            continue
        w, starts = words[c.video_id]
        mid = starts + clip_seconds / 2
        inside = w[(mid >= c.start) & (mid < c.end)].astype(np.int64) + vocab.visual_offset
        if inside.size == 0:
            skipped += 1
            continue
        ids, types = layout(text, inside, vocab)
        examples.append(Example(ids, types, np.full_like(ids, IGNORE_INDEX), IGNORE_INDEX))
        v = int(verb_ids[verbs.index(c.verb)])
        n = int(noun_ids[nouns.index(c.noun)])
        targets.append((position["verb"].get(v, -1), position["noun"].get(n, -1)))
    if skipped:
        log.warning(
            "zero-shot: %d of %d labelled clips skipped (video not tokenized, no clip inside, or unlisted label)",
            skipped, len(clips),
        )
    if not examples:
        raise ValueError("no labelled clip could be scored")
    task.eval()
    tgt_all = torch.tensor(targets)  # (N, 2); -1: the label's piece is not a candidate (never a hit)
    hits = {"verb": {1: 0, 5: 0}, "noun": {1: 0, 5: 0}}
    for s in range(0, len(examples), batch_size):
        batch = collate(examples[s : s + batch_size], vocab.pad)
        tgt = tgt_all[s : s + batch_size]  # (B, 2)
        for slot, name, col in ((slots[0], "verb", 0), (slots[1], "noun", 1)):
            pos = torch.full((len(batch),), 1 + slot)  # +1 for [CLS]
            logits = fill_in_blank(task, batch, pos)[:, cand[name]]  # (B, C)
            for k, n in topk_hits(logits, tgt[:, col], (1, 5)).items():
                hits[name][k] += n
    # the language prior: the template alone, no video (one prediction for every clip)
    prior_ids, prior_types = layout(text, text[:0], vocab)
    prior = collate([Example(prior_ids, prior_types, np.full_like(prior_ids, IGNORE_INDEX), IGNORE_INDEX)], vocab.pad)
    prior_hits = {}
    for slot, name, col in ((slots[0], "verb", 0), (slots[1], "noun", 1)):
        logits = fill_in_blank(task, prior, torch.tensor([1 + slot]))[:, cand[name]]  # (1, C)
        prior_hits[name] = topk_hits(logits.expand(len(examples), -1), tgt_all[:, col], (1, 5))
    n = len(examples)
    result: dict[str, float | int | str] = {"scoring": scoring, "clips": n, "skipped": skipped}
    for name in ("verb", "noun"):
        for k in (1, 5):
            result[f"{name}_top{k}"] = hits[name][k] / n
    for name in ("verb", "noun"):
        for k in (1, 5):
            result[f"prior_{name}_top{k}"] = prior_hits[name][k] / n
    for name in ("verb", "noun"):
        result[f"{name}_chance_top1"] = 1 / len(cand[name])
        result[f"candidates_{name}"] = len(cand[name])
    return result


def load_video_task(checkpoint: str | Path, codebook: str | Path):
    """A VideoBERT :class:`~multibert.core.pretraining.PretrainingTask` from a ``.ckpt`` (``weights_only``).

    The adapter is rebuilt as a :class:`~multibert.video.adapter.VideoAdapter` over ``codebook`` (its buffers are
    then overwritten by the checkpoint's), so checkpoints whose hyperparameters lack the adapter's description
    load too; a ``codebook`` other than the one the model was trained with is refused.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True).get("hyper_parameters", {})
    recorded = hparams.get("adapter") or {}
    init_args = {**recorded.get("init_args", {}), "codebook": str(codebook)}
    adapter = {"class_path": f"{VideoAdapter.__module__}.{VideoAdapter.__qualname__}", "init_args": init_args}
    task = PretrainingTask.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True, adapter=adapter)
    theirs = HierarchicalKMeans.load(codebook).leaves
    ours = task.encoder.adapter.codebook().leaves
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours):
        raise ValueError(
            f"{codebook} is not the codebook {checkpoint} was trained with; tokenize the labelled videos with "
            "`multibert tokenize-video --codebook <training tokens_dir>/codebook.safetensors`"
        )
    return task


def zeroshot_video(
    *,
    checkpoint: str,
    tokens_dir: str,
    labels: str,
    vocab_file: str,
    verbs: list[str] | None = None,
    nouns: list[str] | None = None,
    template: str = TEMPLATE,
    scoring: str = "open",
    batch_size: int = 64,
) -> dict[str, float | int | str]:
    """Zero-shot verb / noun classification by fill-in-the-blank (``multibert zeroshot-video``).

    Args:
        checkpoint: a ``.ckpt`` of VideoBERT pretraining (``multibert fit``).
        tokens_dir: the labelled videos tokenized with the checkpoint's codebook.
        labels: JSON lines with video_id, start, end, verb, noun.
        vocab_file: the WordPiece ``vocab.txt`` the model was trained with.
        verbs: candidate verbs of ``closed`` scoring (default: every verb in ``labels``).
        nouns: candidate nouns of ``closed`` scoring (default: every noun in ``labels``).
        template: text with two ``[MASK]`` slots, verb first (the paper's by default).
        scoring: ``open`` (the verb / noun ranked among the whole text vocabulary: the paper's protocol) or
            ``closed`` (among the candidate labels only).
        batch_size: clips per forward pass.
    """
    labels, vocab_file = resolve_path(labels), str(resolve_path(vocab_file))
    clips = read_labels(labels)
    root = resolve_path(tokens_dir)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    vocab = video_vocab(vocab_file, root / "codebook.safetensors")
    task = load_video_task(checkpoint, root / "codebook.safetensors")
    if task.config.vocab_size != vocab.size:
        raise ValueError(
            f"{checkpoint} has a vocabulary of {task.config.vocab_size}, but {vocab_file} + the codebook of "
            f"{tokens_dir} make {vocab.size}; tokenize with the checkpoint's codebook and vocabulary"
        )
    words = {vid: read_words(root / "words" / f"{vid}.safetensors") for vid in manifest["videos"]}
    result = evaluate_zeroshot(
        task, vocab, load_wordpiece(vocab_file), clips, words, float(manifest["clip_seconds"]), verbs, nouns,
        template, batch_size, scoring,
    )
    r = result
    print(
        f"zero-shot ({r['scoring']} vocabulary: {r['candidates_verb']} verb / {r['candidates_noun']} noun candidates) "
        f"on {r['clips']} clips:\n"
        f"  verbs top-1 {r['verb_top1']:.3f} top-5 {r['verb_top5']:.3f}   language prior {r['prior_verb_top1']:.3f} / "
        f"{r['prior_verb_top5']:.3f}   chance {r['verb_chance_top1']:.4f}\n"
        f"  nouns top-1 {r['noun_top1']:.3f} top-5 {r['noun_top5']:.3f}   language prior {r['prior_noun_top1']:.3f} / "
        f"{r['prior_noun_top5']:.3f}   chance {r['noun_chance_top1']:.4f}"
    )
    print(json.dumps(result))
    return result
