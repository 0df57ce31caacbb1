"""Zero-shot action classification by filling in the blanks (VideoBERT, Sun et al., ICCV 2019, arXiv 1904.01766,
Sec. 4.3): the text ``now let me show you how to [MASK] the [MASK]`` followed by ``[>]`` and the visual words of a
clip; verbs are ranked by the first ``[MASK]``'s predicted distribution and nouns by the second's.

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
from datamodules.video.datamodule import Example, VideoVocab, collate, layout, video_vocab
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


def topk_hits(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...]) -> dict[int, int]:
    """How many rows rank their target within the top k. Shapes: scores (N, C), targets (N,)."""
    order = scores.argsort(dim=1, descending=True)  # (N, C)
    rank = (order == targets[:, None]).float().argmax(1)  # (N,)
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
    verbs: list[str],
    nouns: list[str],
    template: str = TEMPLATE,
    batch_size: int = 64,
) -> dict[str, float]:
    """Top-1 / top-5 verb and noun accuracy of fill-in-the-blank over labelled clips."""
    text, slots = template_ids(tokenizer, template, vocab.mask)
    if len(slots) != 2:
        raise ValueError(f"the template needs two [MASK] slots (verb, noun), got {len(slots)}: {template!r}")
    verb_ids, verb_split = label_ids(tokenizer, verbs)
    noun_ids, noun_split = label_ids(tokenizer, nouns)
    if verb_split or noun_split:
        log.warning(
            "%d verbs and %d nouns span several WordPieces; scored by their first piece", verb_split, noun_split
        )
    examples, targets, skipped = [], [], 0
    for c in clips:
        if c.video_id not in words or c.verb not in verbs or c.noun not in nouns:
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
        targets.append((verbs.index(c.verb), nouns.index(c.noun)))
    if skipped:
        log.warning(
            "zero-shot: %d of %d labelled clips skipped (video not tokenized, no clip inside, or unlisted label)",
            skipped, len(clips),
        )
    if not examples:
        raise ValueError("no labelled clip could be scored")
    task.eval()
    hits = {"verb": {1: 0, 5: 0}, "noun": {1: 0, 5: 0}}
    for s in range(0, len(examples), batch_size):
        batch = collate(examples[s : s + batch_size], vocab.pad)
        tgt = torch.tensor(targets[s : s + batch_size])  # (B, 2)
        for slot, name, ids, col in ((slots[0], "verb", verb_ids, 0), (slots[1], "noun", noun_ids, 1)):
            pos = torch.full((len(batch),), 1 + slot)  # +1 for [CLS]
            logits = fill_in_blank(task, batch, pos)[:, ids]  # (B, C)
            for k, n in topk_hits(logits, tgt[:, col], (1, 5)).items():
                hits[name][k] += n
    n = len(examples)
    return {
        "clips": n,
        "skipped": skipped,
        "verb_top1": hits["verb"][1] / n,
        "verb_top5": hits["verb"][5] / n,
        "noun_top1": hits["noun"][1] / n,
        "noun_top5": hits["noun"][5] / n,
        "verb_chance_top1": 1 / len(verbs),
        "noun_chance_top1": 1 / len(nouns),
    }


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
    batch_size: int = 64,
) -> dict[str, float]:
    """Zero-shot verb / noun classification by fill-in-the-blank (``multibert zeroshot-video``).

    Args:
        checkpoint: a ``.ckpt`` of VideoBERT pretraining (``multibert fit``).
        tokens_dir: the labelled videos tokenized with the checkpoint's codebook.
        labels: JSON lines with video_id, start, end, verb, noun.
        vocab_file: the WordPiece ``vocab.txt`` the model was trained with.
        verbs: candidate verbs (default: every verb in ``labels``).
        nouns: candidate nouns (default: every noun in ``labels``).
        template: text with two ``[MASK]`` slots, verb first.
        batch_size: clips per forward pass.
    """
    labels, vocab_file = resolve_path(labels), str(resolve_path(vocab_file))
    clips = read_labels(labels)
    verbs = verbs or sorted({c.verb for c in clips})
    nouns = nouns or sorted({c.noun for c in clips})
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
        template, batch_size,
    )
    print(
        f"zero-shot on {result['clips']} clips: verbs top-1 {result['verb_top1']:.3f} top-5 {result['verb_top5']:.3f} "
        f"(chance {result['verb_chance_top1']:.3f}); nouns top-1 {result['noun_top1']:.3f} "
        f"top-5 {result['noun_top5']:.3f} (chance {result['noun_chance_top1']:.3f})"
    )
    print(json.dumps(result))
    return result
