"""Transcript readers: WebVTT, SRT, YouCook2 JSON, HowTo100M JSON (datamodules.video.transcripts)."""

from __future__ import annotations

import json

import pytest

from datamodules.video.sentences import (
    is_punctuated,
    punctuation_conll,
    split_sentences,
    strip_punctuation,
    timed_words,
)
from datamodules.video.transcripts import (
    Sentence,
    load_transcripts,
    read_srt,
    read_transcript_json,
    read_webvtt,
)

VTT = """WEBVTT
Kind: captions

NOTE a comment
that spans lines

STYLE
::cue { color: red }

intro
00:00:01.000 --> 00:00:03.500 align:start position:0%
now <c.colorE5E5E5>cut</c> the &amp; onion

00:03.500 --> 01:02:04.250
<v Chef>add the <00:00:04.000>salt</v>
"""

ROLLING = """WEBVTT

00:00:00.000 --> 00:00:02.000
first line

00:00:02.000 --> 00:00:04.000
first line
second line

00:00:04.000 --> 00:00:06.000
second line
third line
"""

SRT = """1
00:00:00,500 --> 00:00:02,000
Heat the pan.

2
00:00:02,000 --> 00:00:05,250
Add <i>oil</i>
and wait.
"""


def test_webvtt(tmp_path):
    (tmp_path / "a.vtt").write_text(VTT)
    s = read_webvtt(tmp_path / "a.vtt")
    assert s == [Sentence(1.0, 3.5, "now cut the & onion"), Sentence(3.5, 3724.25, "add the salt")]


def test_webvtt_rolling_captions_are_deduplicated(tmp_path):
    (tmp_path / "r.vtt").write_text(ROLLING)
    assert [x.text for x in read_webvtt(tmp_path / "r.vtt")] == ["first line", "second line", "third line"]


def test_srt(tmp_path):
    (tmp_path / "b.srt").write_text(SRT)
    assert read_srt(tmp_path / "b.srt") == [Sentence(0.5, 2.0, "Heat the pan."), Sentence(2.0, 5.25, "Add oil and wait.")]


def test_youcook2(tmp_path):
    data = {"database": {"vid1": {"subset": "training", "annotations": [
        {"id": 1, "segment": [50, 60], "sentence": "add salt"},
        {"id": 0, "segment": [10, 20], "sentence": "cut the tomato"},
    ]}}}
    (tmp_path / "yc.json").write_text(json.dumps(data))
    assert read_transcript_json(tmp_path / "yc.json") == {
        "vid1": [Sentence(10.0, 20.0, "cut the tomato"), Sentence(50.0, 60.0, "add salt")]
    }


def test_howto100m(tmp_path):
    data = {"abc": {"start": [0.0, 3.2], "end": [3.2, 6.0], "text": ["hello there", "mix it"]}}
    (tmp_path / "caption.json").write_text(json.dumps(data))
    assert load_transcripts(tmp_path / "caption.json") == {
        "abc": [Sentence(0.0, 3.2, "hello there"), Sentence(3.2, 6.0, "mix it")]
    }


def test_folder_of_vtt_and_srt(tmp_path):
    (tmp_path / "v1.vtt").write_text(VTT)
    (tmp_path / "v2.srt").write_text(SRT)
    (tmp_path / "readme.txt").write_text("ignored")
    got = load_transcripts(tmp_path)
    assert sorted(got) == ["v1", "v2"] and len(got["v2"]) == 2


def test_errors_name_the_file_and_field(tmp_path):
    (tmp_path / "bad.vtt").write_text("not a header\n\n00:00:01.000 --> 00:00:02.000\nx\n")
    with pytest.raises(ValueError, match="bad.vtt.*WEBVTT"):
        read_webvtt(tmp_path / "bad.vtt")
    (tmp_path / "t.srt").write_text("1\n00:00:01 --> 00:00:02\nx\n")
    with pytest.raises(ValueError, match="t.srt: malformed cue timing"):
        read_srt(tmp_path / "t.srt")
    (tmp_path / "h.json").write_text(json.dumps({"abc": {"start": [0.0], "end": [1.0, 2.0], "text": ["a"]}}))
    with pytest.raises(ValueError, match="h.json: entry 'abc' has 1 starts, 2 ends"):
        load_transcripts(tmp_path / "h.json")
    (tmp_path / "y.json").write_text(json.dumps({"database": {"v": {"annotations": [{"segment": [0, 1]}]}}}))
    with pytest.raises(KeyError, match=r"annotations\[0\] needs 'segment' and 'sentence'"):
        load_transcripts(tmp_path / "y.json")
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        load_transcripts(tmp_path / "nothing")


# ----------------------------------------------------------------- ASR cues → sentences (datamodules.video.sentences)

# YouTube-style ASR without punctuation: cues of 1-3 clips that cut sentences anywhere, a pause after "onion"
ASR = [
    Sentence(0.0, 1.5, "first cut the"),
    Sentence(1.5, 3.0, "onion into slices"),
    Sentence(4.5, 6.0, "now heat some oil"),
    Sentence(6.0, 7.5, "in a pan and add"),
    Sentence(7.5, 9.0, "the onion"),
]


def test_unpunctuated_asr_is_split_at_pauses_and_length():
    assert not is_punctuated(timed_words(ASR), max_words=32)
    got = split_sentences(ASR, "auto", max_words=32, pause=1.0)  # no punctuation, no punctuator: the rules
    assert [s.text for s in got] == ["first cut the onion into slices", "now heat some oil in a pan and add the onion"]
    assert (got[0].start, got[0].end, got[1].start, got[1].end) == (0.0, 3.0, 4.5, 9.0)
    capped = split_sentences(ASR, "rules", max_words=5, pause=1.0)
    assert [len(s.text.split()) for s in capped] == [3, 3, 4, 4, 3]  # near-equal parts, never above 5
    assert all(a.end <= b.start + 1e-9 for a, b in zip(capped, capped[1:]))


def test_punctuation_decides_where_present():
    cues = [Sentence(0.0, 2.0, "Cut the onion. Then heat"), Sentence(2.0, 4.0, "the oil! Is it hot?"),
            Sentence(4.0, 5.0, "yes")]
    got = split_sentences(cues, "auto", max_words=32)
    assert [s.text for s in got] == ["Cut the onion.", "Then heat the oil!", "Is it hot?", "yes"]
    # word times are spread over each cue by length: the first sentence ends inside the first cue
    assert got[0].start == 0.0 and 0.5 < got[0].end < 2.0 and got[1].start == pytest.approx(got[0].end)
    assert split_sentences(cues, "cues") == cues


def test_a_punctuator_restores_sentences_of_unpunctuated_asr():
    def punctuator(words: list[str]) -> list[str]:  # a stand-in model: a period after "onion"
        return [w + "." if w == "onion" else w for w in words]

    got = split_sentences(ASR, "auto", max_words=32, punctuator=punctuator)
    assert [s.text for s in got] == ["first cut the onion.", "into slices now heat some oil in a pan and add the onion."]
    with pytest.raises(ValueError, match="needs a punctuator"):
        split_sentences(ASR, "punctuator")
    with pytest.raises(ValueError, match="unknown sentence split"):
        split_sentences(ASR, "magic")


def test_punctuation_training_data(tmp_path):
    assert strip_punctuation("onion,") == ("onion", "B-COMMA") and strip_punctuation('hot?"') == ("hot", "B-QUESTION")
    assert strip_punctuation("done.") == ("done", "B-PERIOD") and strip_punctuation("pan") == ("pan", "O")
    n = punctuation_conll(["Cut the onion, then fry it.", "Is it done? Yes!"], tmp_path / "p.conll", window=4)
    rows = [line.split() for line in (tmp_path / "p.conll").read_text().splitlines()]
    assert n == 3 and rows[:5] == [["cut", "O"], ["the", "O"], ["onion", "B-COMMA"], ["then", "O"], []]
    assert ["it", "B-PERIOD"] in rows and ["done", "B-QUESTION"] in rows and ["yes", "B-PERIOD"] in rows
