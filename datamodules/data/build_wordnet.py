"""Build the shipped fine-tuning sets from WordNet 3.0 (Debian package ``wordnet-base``).

WordNet 3.0 is © 2006 Princeton University under the WordNet 3.0 licence (permission to use, copy, modify and
distribute for any purpose without fee, provided the copyright notice and disclaimer are kept; see
``datamodules/data/wordnet/LICENSE``). Every file written here is derived from WordNet's ``data.*`` files:

- ``wordnet/senses_{train,val,test}.jsonl``: single-label classification, 45 classes. One record per synset:
  ``{"id": "n00001740", "text": <definition>, "label": <lexicographer file, e.g. noun.food>}``.
- ``wordnet/lemmas_{train,val,test}.jsonl``: multi-label classification with hierarchical string labels (the
  patentBERT quickstart). One record per polysemous lemma: the text is all its definitions joined by " ; "
  (long documents, for the windowed docBERT path), the labels are the set of lexicographer files of its senses.
- ``wordnet/qa_{train,dev}.json``: SQuAD v2.0 JSON. Each context lists a few synsets as
  ``"<lemma>: <definition>."``; answerable questions ask what a listed lemma means (the answer is its definition),
  unanswerable ones ask about a lemma that is not in the context. The questions are templated (machine-made from
  the real WordNet text), so the set tests the QA machinery, not reading comprehension.
- ``wordnet/supersense_{train,dev,test}.conll``: NER-style supersense tagging (Ciaramita & Johnson, 2003) in
  CoNLL ``token tag`` form with BIO tags. Sentences are WordNet's usage examples of noun synsets; the occurrence
  of the synset's lemma is tagged with its supersense (``B-person`` ...). Only that one mention per sentence is
  annotated (other nouns stay ``O``): a partially annotated set, enough to exercise the NER path.
- ``wordnet/biology_corpus.txt``: a small domain corpus for the bioBERT / SciBERT recipes, in BERT's pretraining
  format (one sentence per line, a blank line between documents): the definitions and usage examples of the
  ``noun.animal``, ``noun.plant``, ``noun.body``, ``noun.substance`` and ``verb.body`` synsets, 12 synsets per
  document. Taxonomic text ("genus of ...", Latin names) whose vocabulary differs visibly from general English.

Run (needs network once, to Debian's mirror)::

    cd /tmp && apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb wn
    python datamodules/data/build_wordnet.py --wordnet /tmp/wn/usr/share/wordnet --out datamodules/data/wordnet

The output is deterministic for a given WordNet and seed.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from pathlib import Path

#: WordNet's 45 lexicographer files, indexed by the ``lex_filenum`` field (``lexnames(5WN)``).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()

DOMAIN = ("noun.animal", "noun.plant", "noun.body", "noun.substance", "verb.body")
DOMAIN_SYNSETS = 9000

SIZES = {"senses": (12000, 1500, 1500), "lemmas": (5000, 700, 700), "qa": (450, 60), "supersense": (3000, 400, 400)}


def read_synsets(wordnet: Path) -> list[dict]:
    """Every synset of ``data.{noun,verb,adj,adv}``: id, lexname, lemmas, definition, examples."""
    synsets = []
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(wordnet / f"data.{pos}", encoding="utf-8", errors="replace"):
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            offset, lex, ss_type, w_cnt = fields[0], int(fields[1]), fields[2], int(fields[3], 16)
            lemmas = [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(w_cnt)]
            parts = [p.strip() for p in gloss.strip().split(";")]
            definition = parts[0].strip()
            examples = [m.group(1) for m in re.finditer(r'"([^"]+)"', gloss)]
            if definition and not definition.startswith('"'):
                synsets.append(
                    dict(id=f"{ss_type}{offset}", lexname=LEXNAMES[lex], lemmas=lemmas, definition=definition, examples=examples)
                )
    return synsets


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def split(rows: list, sizes: tuple[int, ...], rng: random.Random) -> list[list]:
    rows = list(rows)
    rng.shuffle(rows)
    out, start = [], 0
    for n in sizes:
        out.append(rows[start : start + n])
        start += n
    return out


def build_senses(synsets: list[dict], out: Path, rng: random.Random) -> None:
    rows = [{"id": s["id"], "text": s["definition"], "label": s["lexname"]} for s in synsets]
    for name, part in zip(("train", "val", "test"), split(rows, SIZES["senses"], rng)):
        write_jsonl(out / f"senses_{name}.jsonl", part)


def build_lemmas(synsets: list[dict], out: Path, rng: random.Random) -> None:
    senses = defaultdict(list)
    for s in synsets:
        for lemma in s["lemmas"]:
            senses[lemma.lower()].append(s)
    rows = []
    for lemma, ss in sorted(senses.items()):
        labels = sorted({s["lexname"] for s in ss})
        if len(ss) >= 2:
            rows.append({"id": lemma, "text": " ; ".join(s["definition"] for s in ss), "labels": labels})
    for name, part in zip(("train", "val", "test"), split(rows, SIZES["lemmas"], rng)):
        write_jsonl(out / f"lemmas_{name}.jsonl", part)


QUESTIONS = ("What does {} mean?", "What is the meaning of {}?", "Define {}.", "What is meant by {}?")


def build_qa(synsets: list[dict], out: Path, rng: random.Random) -> None:
    nouns = [s for s in synsets if s["id"].startswith("n") and len(s["definition"]) < 120]
    rng.shuffle(nouns)
    used_lemmas = set()
    paragraphs, q = [], 0
    for start in range(0, 5 * sum(SIZES["qa"]), 5):
        group = nouns[start : start + 5]
        context, qas = "", []
        for s in group:
            lemma = s["lemmas"][0]
            used_lemmas.add(lemma.lower())
            prefix = f"{lemma}: "
            answer_start = len(context) + len(prefix)
            context += f"{prefix}{s['definition']}. "
            q += 1
            qas.append({
                "id": f"wnqa{q:05d}",
                "question": rng.choice(QUESTIONS).format(lemma),
                "answers": [{"text": s["definition"], "answer_start": answer_start}],
                "is_impossible": False,
            })
        for other in rng.sample(nouns[5 * sum(SIZES["qa"]) :], 2):  # lemmas from outside every context
            q += 1
            qas.append({
                "id": f"wnqa{q:05d}",
                "question": rng.choice(QUESTIONS).format(other["lemmas"][0]),
                "answers": [],
                "plausible_answers": [],
                "is_impossible": True,
            })
        paragraphs.append({"context": context.strip(), "qas": qas})
    train, dev = paragraphs[: SIZES["qa"][0]], paragraphs[SIZES["qa"][0] :]
    for name, part in (("train", train), ("dev", dev)):
        doc = {"version": "v2.0", "data": [{"title": f"WordNet definitions ({name})", "paragraphs": part}]}
        (out / f"qa_{name}.json").write_text(json.dumps(doc, ensure_ascii=False, indent=None), encoding="utf-8")


TOKEN = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def build_supersense(synsets: list[dict], out: Path, rng: random.Random) -> None:
    sentences = []
    for s in synsets:
        if not s["id"].startswith("n") or s["lexname"] == "noun.Tops":
            continue
        tag = s["lexname"].split(".", 1)[1]
        for example in s["examples"]:
            tokens = TOKEN.findall(example)
            lower = [t.lower() for t in tokens]
            for lemma in s["lemmas"]:
                words = TOKEN.findall(lemma.lower())
                n = len(words)
                hit = next((i for i in range(len(lower) - n + 1) if lower[i : i + n] == words), None)
                if hit is not None:
                    tags = ["O"] * len(tokens)
                    tags[hit] = f"B-{tag}"
                    for j in range(hit + 1, hit + n):
                        tags[j] = f"I-{tag}"
                    sentences.append(list(zip(tokens, tags)))
                    break
    for name, part in zip(("train", "dev", "test"), split(sentences, SIZES["supersense"], rng)):
        with open(out / f"supersense_{name}.conll", "w", encoding="utf-8") as f:
            for sentence in part:
                f.writelines(f"{token} {tag}\n" for token, tag in sentence)
                f.write("\n")


def build_domain_corpus(synsets: list[dict], out: Path, rng: random.Random) -> None:
    chosen = [s for s in synsets if s["lexname"] in DOMAIN]
    rng.shuffle(chosen)
    chosen = chosen[:DOMAIN_SYNSETS]
    with open(out / "biology_corpus.txt", "w", encoding="utf-8") as f:
        for start in range(0, len(chosen), 12):
            for s in chosen[start : start + 12]:
                definition = s["definition"][0].upper() + s["definition"][1:]
                f.write(f"{s['lemmas'][0]}: {definition}.\n")
                f.writelines(f"{e[0].upper()}{e[1:]}.\n" for e in s["examples"] if e)
            f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, required=True, help="folder with WordNet's data.* files")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "wordnet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    synsets = read_synsets(args.wordnet)
    for build in (build_senses, build_lemmas, build_qa, build_supersense, build_domain_corpus):
        build(synsets, args.out, random.Random(args.seed))
    licence = Path("/usr/share/doc/wordnet-base/copyright")
    copyright_file = args.wordnet.parent / "doc" / "wordnet-base" / "copyright"
    for candidate in (copyright_file, licence):
        if candidate.is_file():
            (args.out / "LICENSE").write_text(candidate.read_text(encoding="utf-8"), encoding="utf-8")
            break
    print(f"{len(synsets)} synsets → {args.out}")


if __name__ == "__main__":
    main()
