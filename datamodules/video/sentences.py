"""ASR transcripts into sentences (VideoBERT, Sun et al., ICCV 2019, arXiv 1904.01766, Sec. 4.2: the paper restores
punctuation of YouTube's ASR with an off-the-shelf LSTM language model and splits the word stream into sentences).

Caption cues are not sentences: YouTube's cues cover 1-3 clips of 1.5 s and cut sentences anywhere. The cues of a
video are joined into one stream of timed words (a cue's words get times spread over the cue in proportion to
their length) and cut again into sentences by one of these ``method`` s:

- ``punctuation``: after every word that ends a sentence (``.``, ``?``, ``!``, ``…``), and at ``max_words``;
- ``punctuator``: a token-classification model (a multibert ``TokenClassificationTask`` checkpoint, see
  :class:`TaggerPunctuator`) first puts the punctuation back, then as ``punctuation``;
- ``rules``: the fallback without punctuation: at a pause of at least ``pause`` seconds between cues, and at
  ``max_words`` (a long stretch is cut into near-equal parts rather than a full part and a stub);
- ``cues``: every cue as it comes (the transcripts are sentences already: YouCook2's human captions);
- ``auto`` (default): ``punctuation`` if the stream is punctuated (at least one sentence end per
  ``2 · max_words`` words), else ``punctuator`` when one is given, else ``rules``.

A sentence spans from its first word's start to its last word's end. Training a punctuator with multibert's
token-classification task (the recipe in the README): :func:`punctuation_conll` turns punctuated text into CoNLL
``word tag`` lines (tags ``O``, ``B-PERIOD``, ``B-QUESTION``, ``B-COMMA`` on the word the mark follows), and
``configs/videobert/punctuator.yaml`` fine-tunes on them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datamodules.video.transcripts import Sentence

log = logging.getLogger(__name__)

METHODS = ("auto", "punctuation", "punctuator", "rules", "cues")
_END = re.compile(r"(\.|\?|!|…)[\"')\]]*$")
#: punctuation tag of a word → the mark it is followed by
TAG_MARKS = {"B-PERIOD": ".", "B-QUESTION": "?", "B-COMMA": ","}

#: a punctuator maps words without punctuation to the same words with the marks put back
Punctuator = Callable[[list[str]], list[str]]


@dataclass(frozen=True)
class TimedWord:
    """One word of a transcript and the playback time it is spoken, in seconds."""

    text: str
    start: float
    end: float


def timed_words(cues: Sequence[Sentence]) -> list[TimedWord]:
    """The words of the cues with times spread over each cue in proportion to their length (plus one for the gap)."""
    out: list[TimedWord] = []
    for cue in cues:
        words = cue.text.split()
        if not words:
            continue
        weights = [len(w) + 1 for w in words]
        total = sum(weights)
        t = cue.start
        span = max(cue.end - cue.start, 0.0)
        for i, (w, weight) in enumerate(zip(words, weights)):
            end = cue.end if i == len(words) - 1 else t + span * weight / total  # the cue's end exactly
            out.append(TimedWord(w, t, end))
            t = end
    return out


def is_punctuated(words: Sequence[TimedWord | str], max_words: int) -> bool:
    """Whether the stream has at least one sentence end per ``2 · max_words`` words (and at least one)."""
    texts = [w.text if isinstance(w, TimedWord) else w for w in words]
    ends = sum(bool(_END.search(t)) for t in texts)
    return ends >= 1 and ends >= len(texts) / (2 * max_words)


def _sentence(words: Sequence[TimedWord]) -> Sentence:
    return Sentence(words[0].start, words[-1].end, " ".join(w.text for w in words))


def _cap(words: list[TimedWord], max_words: int) -> list[list[TimedWord]]:
    """Cut a run longer than ``max_words`` into the fewest near-equal parts."""
    if len(words) <= max_words:
        return [words]
    parts = -(-len(words) // max_words)
    base, extra = divmod(len(words), parts)  # the first `extra` parts get one word more
    bounds = [0]
    for p in range(parts):
        bounds.append(bounds[-1] + base + (p < extra))
    return [words[a:b] for a, b in zip(bounds, bounds[1:])]


def split_on_punctuation(words: Sequence[TimedWord], max_words: int) -> list[Sentence]:
    """Sentences ending at sentence-final punctuation (and at ``max_words``)."""
    out: list[Sentence] = []
    current: list[TimedWord] = []
    for w in words:
        current.append(w)
        if _END.search(w.text):
            out += [_sentence(p) for p in _cap(current, max_words)]
            current = []
    if current:
        out += [_sentence(p) for p in _cap(current, max_words)]
    return out


def split_on_pauses(cues: Sequence[Sentence], pause: float, max_words: int) -> list[Sentence]:
    """The rule-based fallback: a sentence ends at a pause of at least ``pause`` seconds between cues; longer runs
    are cut at ``max_words``."""
    out: list[Sentence] = []
    run: list[TimedWord] = []
    previous_end = None
    for cue in cues:
        words = timed_words([cue])
        if not words:
            continue
        if run and previous_end is not None and cue.start - previous_end >= pause:
            out += [_sentence(p) for p in _cap(run, max_words)]
            run = []
        run += words
        previous_end = cue.end
    if run:
        out += [_sentence(p) for p in _cap(run, max_words)]
    return out


def split_sentences(
    cues: Sequence[Sentence],
    method: str = "auto",
    max_words: int = 32,
    pause: float = 1.0,
    punctuator: Punctuator | None = None,
) -> list[Sentence]:
    """One video's transcript cues → sentences (see the module docstring for the methods).

    Args:
        cues: the cues in time order (:func:`datamodules.video.transcripts.load_transcripts`).
        method: ``auto``, ``punctuation``, ``punctuator``, ``rules`` or ``cues``.
        max_words: longest sentence, in words.
        pause: a silence at least this long (seconds) between cues ends a sentence (``rules``).
        punctuator: restores punctuation (``punctuator``, and ``auto`` on unpunctuated text).
    """
    if method not in METHODS:
        raise ValueError(f"unknown sentence split {method!r}; choose one of {METHODS}")
    if method == "cues":
        return list(cues)
    words = timed_words(cues)
    if not words:
        return []
    if method == "auto":
        method = "punctuation" if is_punctuated(words, max_words) else "punctuator" if punctuator else "rules"
    if method == "punctuation":
        return split_on_punctuation(words, max_words)
    if method == "rules":
        return split_on_pauses(cues, pause, max_words)
    if punctuator is None:
        raise ValueError("sentence split 'punctuator' needs a punctuator (data.punctuator: a checkpoint)")
    restored = punctuator([w.text for w in words])
    if len(restored) != len(words):
        raise ValueError(f"the punctuator returned {len(restored)} words for {len(words)}")
    return split_on_punctuation([TimedWord(t, w.start, w.end) for t, w in zip(restored, words)], max_words)


# ----------------------------------------------------------------- a trained punctuator
def strip_punctuation(word: str) -> tuple[str, str]:
    """``(word without trailing marks, tag)`` with tag ``B-PERIOD`` / ``B-QUESTION`` / ``B-COMMA`` / ``O``."""
    core = word.rstrip(".,?!;:…\"')]")
    trail = word[len(core) :]
    if "?" in trail:
        tag = "B-QUESTION"
    elif any(c in trail for c in ".!…;"):
        tag = "B-PERIOD"
    elif any(c in trail for c in ",:"):
        tag = "B-COMMA"
    else:
        tag = "O"
    return core, tag


def punctuation_conll(texts: Iterable[str], out: str | Path, window: int = 40, lowercase: bool = True) -> int:
    """Write CoNLL ``word tag`` training data for a punctuator from punctuated text.

    The text is read as one stream of words (like ASR, which has no line breaks at sentence ends) and cut into
    windows of ``window`` words, one CoNLL sentence each. Returns the number of windows written.
    """
    stream: list[tuple[str, str]] = []
    for line in texts:
        for raw in line.split():
            word, tag = strip_punctuation(raw)
            word = word.lstrip("\"'([")
            if word:
                stream.append((word.lower() if lowercase else word, tag))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for s in range(0, len(stream), window):
            for word, tag in stream[s : s + window]:
                f.write(f"{word} {tag}\n")
            f.write("\n")
            n += 1
    log.info("wrote %d punctuation windows (%d words) to %s", n, len(stream), out)
    return n


class TaggerPunctuator:
    """Punctuation restoration with a multibert token-classification checkpoint (``multibert fit`` of
    ``configs/videobert/punctuator.yaml``): each word gets the tag of its first WordPiece, and ``B-PERIOD`` /
    ``B-QUESTION`` / ``B-COMMA`` append ``.`` / ``?`` / ``,``.

    Args:
        checkpoint: the ``.ckpt`` (its vocabulary travels inside it).
        window: words per forward pass.
    """

    def __init__(self, checkpoint: str | Path, window: int = 40) -> None:
        import tempfile

        import torch

        from datamodules.tokenizer import load_wordpiece
        from multibert.core.task import EncoderTask

        self.task = EncoderTask.from_checkpoint(checkpoint).eval()
        labels = getattr(self.task, "labels", None)
        if not labels or not set(labels) <= {"O", *TAG_MARKS}:
            raise ValueError(
                f"{checkpoint} is not a punctuator: its labels are {labels}; train one with "
                "configs/videobert/punctuator.yaml"
            )
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        vocab = next((v["vocab"] for v in state.values() if isinstance(v, dict) and "vocab" in v), None)
        if vocab is None:
            raise ValueError(f"{checkpoint} holds no vocabulary (was it trained with `multibert fit`?)")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            f.write(vocab)
        self.tokenizer = load_wordpiece(f.name)
        Path(f.name).unlink()
        v = self.tokenizer.get_vocab()
        self.cls, self.sep = v["[CLS]"], v["[SEP]"]
        self.window = window
        self.max_len = self.task.config.max_position_embeddings

    def __call__(self, words: list[str]) -> list[str]:
        import torch

        from multibert.core.batch import TokenBatch

        out: list[str] = []
        for s in range(0, len(words), self.window):
            chunk = [strip_punctuation(w)[0] or w for w in words[s : s + self.window]]
            enc = self.tokenizer.encode(chunk, is_pretokenized=True, add_special_tokens=False)
            ids, first = enc.ids[: self.max_len - 2], {}
            for pos, w in enumerate(enc.word_ids[: self.max_len - 2]):
                if w is not None and w not in first:
                    first[w] = pos + 1  # +1 for [CLS]
            input_ids = torch.tensor([[self.cls, *ids, self.sep]])
            batch = TokenBatch(input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids))
            with torch.inference_mode():
                tags = self.task(batch).argmax(-1)[0]  # (T,)
            for i, w in enumerate(chunk):
                label = self.task.labels[int(tags[first[i]])] if i in first else "O"
                out.append(w + TAG_MARKS.get(label, ""))
        return out


def main() -> None:
    """``python -m datamodules.video.sentences --text CORPUS --out punctuation.conll``: punctuator training data."""
    from jsonargparse import CLI

    def conll(*, text: list[str], out: str, window: int = 40, lowercase: bool = True) -> None:
        """Write CoNLL punctuation tags for punctuated text files.

        Args:
            text: punctuated text files.
            out: the CoNLL file to write.
            window: words per CoNLL sentence.
            lowercase: lower-case the words (ASR is lower-case).
        """

        def lines():
            for path in text:
                with open(path, encoding="utf-8") as f:
                    yield from f

        print(f"{punctuation_conll(lines(), out, window, lowercase)} windows → {out}")

    CLI(conll)


if __name__ == "__main__":
    main()
