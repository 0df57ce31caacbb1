"""Transcript readers: WebVTT, SRT, YouCook2 JSON, HowTo100M JSON (datamodules.video.transcripts)."""

from __future__ import annotations

import json

import pytest

from datamodules.video.transcripts import Sentence, load_transcripts, read_srt, read_transcript_json, read_webvtt

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
