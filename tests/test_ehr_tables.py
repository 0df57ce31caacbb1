"""EHR input for G-BERT: identity and order checks, pretraining-only tables without leaks, MIMIC-III preparation as
GAMENet / G-BERT do it (every drop counted), GAMENet's DDI forms, lazy reading in the datamodule. Tiny tables built
here; no real data."""

from __future__ import annotations

import logging
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.ehr import datamodule as ehr_datamodule
from datamodules.ehr.datamodule import EHRDataModule
from datamodules.ehr.mimic import prepare_mimic, read_mimic_table, read_ndc_to_rxnorm
from datamodules.ehr.tables import prepare_ehr, read_admissions, read_split_ids, write_admissions, write_split_ids
from multibert.gbert.batch import GBertPretrainBatch, GBertRecommendBatch
from multibert.gbert.ddi import load_ddi, read_ddi_pickle, read_twosides


def table(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (SUBJECT_ID, HADM_ID, diagnoses, medications[, ADMITTIME])."""
    columns = ["SUBJECT_ID", "HADM_ID", "ICD9_CODE", "ATC4", "ADMITTIME"][: len(rows[0])]
    return pd.DataFrame(rows, columns=columns)


def jsonl(tmp_path: Path, rows: list[tuple], name: str = "visits.jsonl") -> Path:
    return write_admissions(table(rows), tmp_path / name)


# ------------------------------------------------------------------------------------------- identity, order
def test_a_non_integer_id_names_its_row(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [(1, 10, ["4019"], ["N02B"]), (1, 11, ["4019"], ["N02B"]), ("abc", 20, ["042"], ["C07A"])])
    with pytest.raises(ValueError, match=r"visits.jsonl: row 3: SUBJECT_ID must be an integer ID, found 'abc'"):
        read_admissions(path)


def test_duplicate_hadm_ids_name_the_rows(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [(1, 10, ["4019"], ["N02B"]), (1, 11, ["4019"], ["N02B"]), (2, 10, ["042"], ["C07A"])])
    with pytest.raises(ValueError, match=r"HADM_ID 10 appears in rows 1 and 3 \(SUBJECT_ID 1, 2\)"):
        read_admissions(path)


def test_visits_are_ordered_by_admittime(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [  # patient 1's rows list the later admission first
        (1, 12, ["4019"], ["N02B"], "2102-05-01 08:00:00"), (1, 11, ["25000"], ["A10B"], "2101-01-01 10:00:00"),
        (2, 21, ["042"], ["C07A"], "2110-01-01 00:00:00"),
    ]
    for path in (jsonl(tmp_path, rows), write_admissions(table(rows), tmp_path / "visits.parquet")):
        with caplog.at_level(logging.INFO):
            df = read_admissions(path)
        assert df.HADM_ID.tolist() == [11, 12, 21]
        assert "the visits of 1 patients ordered by ADMITTIME" in caplog.text
    # the history of a target visit holds only earlier visits: patient 1's target is admission 12
    for name, ids in (("train-id.txt", [2]), ("eval-id.txt", [1]), ("test-id.txt", [])):
        (tmp_path / name).write_text("".join(f"{i}\n" for i in ids))
    batch = next(iter(EHRDataModule(path=str(tmp_path / "visits.jsonl"), batch_size=2).val_dataloader()))
    assert batch.hadm_id.tolist() == [12]


def test_a_missing_admittime_names_its_row(tmp_path: Path) -> None:
    path = jsonl(tmp_path, [(1, 12, ["4019"], ["N02B"], "2102-05-01"), (1, 11, ["4019"], ["A10B"], None)])
    with pytest.raises(ValueError, match=r"row 2: ADMITTIME is missing or not a date-time"):
        read_admissions(path)


def test_a_reversed_file_without_times_is_refused(tmp_path: Path) -> None:
    rows = [(1, 10, ["4019"], ["N02B"]), (1, 11, ["042"], ["C07A"]), (2, 20, ["042"], ["C07A"]), (3, 30, ["042"], ["A10B"])]
    read_admissions(jsonl(tmp_path, rows))
    with pytest.raises(ValueError, match=r"row 2 \(SUBJECT_ID 2\) follows row 1 \(SUBJECT_ID 3\): patients out of order"):
        read_admissions(jsonl(tmp_path, rows[::-1], "reversed.jsonl"))
    split = [rows[0], rows[2], rows[1], rows[3]]
    with pytest.raises(ValueError, match=r"SUBJECT_ID 1 is split: rows 1 and 3 are not consecutive"):
        read_admissions(jsonl(tmp_path, split, "split.jsonl"))


def test_tables_ordered_by_hadm_id_are_flagged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [(s, 100 * s + v, ["4019"], ["N02B"]) for s in range(1, 11) for v in range(2)]
    with caplog.at_level(logging.WARNING):
        read_admissions(jsonl(tmp_path, rows))
    assert "every patient's visits are in ascending HADM_ID order" in caplog.text
    caplog.clear()
    rows[0], rows[1] = rows[1], rows[0]  # one patient's visits against HADM_ID order: no sign of a HADM_ID sort
    with caplog.at_level(logging.WARNING):
        read_admissions(jsonl(tmp_path, rows, "other.jsonl"))
    assert "ascending HADM_ID" not in caplog.text


def test_split_files_may_not_share_patients(tmp_path: Path) -> None:
    for name, ids in (("train-id.txt", [1, 2]), ("eval-id.txt", [3]), ("test-id.txt", [2])):
        (tmp_path / name).write_text("".join(f"{i}\n" for i in ids))
    with pytest.raises(ValueError, match=r"SUBJECT_ID\(s\) \[2\] are in both train-id.txt and test-id.txt"):
        read_split_ids(tmp_path)
    (tmp_path / "test-id.txt").write_text("4\n")
    with pytest.raises(ValueError, match="already holds split files .* with other patients"):
        write_split_ids({"train": {1}, "val": {3}, "test": {4}}, tmp_path)
    write_split_ids({"train": {1, 2}, "val": {3}, "test": {4}}, tmp_path)  # the same contents: fine


# ------------------------------------------------------------------------------------------- pretraining tables
def main_table(tmp_path: Path) -> Path:
    """Six two-visit patients; split files: train 1-4, validation 5, test 6."""
    rows = [(s, 10 * s + v, ["4019", f"25{s}"], ["N02B", "C07A" if v else "A10B"]) for s in range(1, 7) for v in range(2)]
    path = jsonl(tmp_path, rows)
    for name, ids in (("train-id.txt", [1, 2, 3, 4]), ("eval-id.txt", [5]), ("test-id.txt", [6])):
        (tmp_path / name).write_text("".join(f"{i}\n" for i in ids))
    return path


def single_visit_pickle(tmp_path: Path) -> Path:
    """The authors' data-single-visit.pkl form: 5-character ATC codes, some rows that must not pretrain."""
    path = tmp_path / "single" / "data-single-visit.pkl"
    path.parent.mkdir()
    table([
        (5, 500, ["0031"], ["J01CA"]),  # a validation patient
        (6, 600, ["0032"], ["J01DB"]),  # a test patient
        (1, 10, ["4019"], ["N02BE"]),  # an admission the main table holds
        (7, 700, ["4019", "0039"], ["N02BE", "H02AB"]),  # new single-visit patients: they pretrain
        (8, 800, ["V4581"], ["A02BC"]),
    ]).to_pickle(path)
    return path


def visit_sets(dm: EHRDataModule, batch: GBertPretrainBatch) -> list[tuple[frozenset, frozenset]]:
    return [
        (frozenset(dm.dx_codes[i] for i in torch.nonzero(d).flatten()), frozenset(dm.rx_codes[i] for i in torch.nonzero(r).flatten()))
        for d, r in zip(batch.dx_labels, batch.rx_labels)
    ]


def test_pretraining_tables_never_admit_validation_or_test_patients(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, extra = main_table(tmp_path), single_visit_pickle(tmp_path)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        _ = EHRDataModule(path=str(path), pretrain_paths=[str(extra)], task="pretrain").dx_codes
    main = read_admissions(path)
    train_visits = {(frozenset(d), frozenset(r)) for s, d, r in zip(main.SUBJECT_ID, main.ICD9_CODE, main.ATC4) if s <= 4}
    added = {(frozenset({"4019", "0039"}), frozenset({"N02B", "H02A"})), (frozenset({"V4581"}), frozenset({"A02B"}))}

    dm = EHRDataModule(path=str(path), pretrain_paths=[str(extra)], allow_pickle=True, task="recommend", alternate=(1, 1), batch_size=64)
    with caplog.at_level(logging.WARNING):
        assert "0031" not in dm.dx_codes and "J01C" not in dm.rx_codes and "J01D" not in dm.rx_codes
    assert {"0039", "V4581"} <= set(dm.dx_codes) and {"H02A", "A02B"} <= set(dm.rx_codes)  # cut to 4 characters
    assert "'admissions of validation/test patients': 2" in caplog.text
    assert "'admissions already in the main table or an earlier pretraining table': 1" in caplog.text
    assert "cut 6 ATC codes longer than 4 characters" in caplog.text
    # one round of the alternating schedule: its pretraining part is the train patients' visits and the new ones
    seen, subjects = [], set()
    for batch in dm.train_dataloader():
        if isinstance(batch, GBertPretrainBatch):
            seen += visit_sets(dm, batch)
        else:
            assert isinstance(batch, GBertRecommendBatch)
            subjects |= set(batch.subject_id.tolist())
    assert Counter(seen) == Counter(train_visits | added) and len(seen) == 8 + 2
    assert subjects == {1, 2, 3, 4}
    # the pretraining task's own loaders: training adds the tables, validation does not
    pre = EHRDataModule(path=str(path), pretrain_paths=[str(extra)], allow_pickle=True, task="pretrain", batch_size=64)
    assert len(pre.dataset("pretrain", "train")) == 10 and len(pre.dataset("pretrain", "val")) == 2


def test_the_table_is_read_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = main_table(tmp_path)
    reads = []
    real = ehr_datamodule.read_admissions
    monkeypatch.setattr(ehr_datamodule, "read_admissions", lambda *a, **k: reads.append(a) or real(*a, **k))
    dm = EHRDataModule(path=str(path))
    assert reads == [] and dm.synthetic_data is None
    assert dm.vocab_size == 3 + 7 + 3 and dm.dx_codes[0] == "251" and len(reads) == 1
    assert dm.splits["val"] == {5} and len(dm.dataset("recommend", "train")) == 4 and len(reads) == 1
    with pytest.raises(FileNotFoundError, match=r"data.pretrain_paths\[0\]: nothere.pkl does not exist"):
        EHRDataModule(path=str(path), pretrain_paths=["nothere.pkl"])
    synthetic = EHRDataModule(synthetic_patients=40)
    assert "SYNTHETIC" in synthetic.synthetic_data and "table" not in vars(synthetic)
    with caplog.at_level(logging.WARNING):
        assert synthetic.vocab_size > 3
    assert "no path given, using the SYNTHETIC cohort (40 patients" in caplog.text


# ------------------------------------------------------------------------------------------- MIMIC-III
NDC = {"A": "00054829725", "B": "51079025520", "C": "63323026201", "D": "00093075601", "E": "99999999999",
       "F": "66689036430", "G": "00000000777", "H": "00000000888"}


def write_mimic(directory: Path) -> dict[str, Path]:
    """MIMIC-III-shaped CSVs and GAMENet's two mapping files; each drop rule catches exactly the rows named here."""
    directory.mkdir()
    t = "2101-01-01 10:00:00"
    pd.DataFrame({
        "ROW_ID": range(9), "SUBJECT_ID": [1, 1, 2, 2, 3, 4, 5, 6, 7], "HADM_ID": [12, 11, 21, 22, 31, 41, 51, 61, 71],
        # HADM_ID is not chronological: 12 precedes 11; admission 41 has no time
        "ADMITTIME": ["2101-01-01 09:00:00", "2102-05-01 07:00:00", "2110-01-01", "2111-01-01", "2120-01-01", None,
                      "2130-01-01", "2140-01-01", "2150-01-01"],
    }).to_csv(directory / "ADMISSIONS.csv", index=False)
    rx = [  # SUBJECT_ID, HADM_ID, ICUSTAY_ID, STARTDATE, NDC
        (1, 12, 100, t, "A"), (1, 12, 100, t, "B"), (1, 12, 100, "2101-01-02 09:00:00", "C"), (1, 12, 100, t, "0"),
        (1, 11, 101, t, "A"), (1, 11, 101, t, "D"), (1, 11, 101, t, "E"), (1, 11, 102, "2101-01-03 08:00:00", "B"),
        (2, 21, 200, t, "B"), (2, 21, 200, t, "D"), (2, 21, 200, t, None),
        (2, 22, 201, t, "A"), (2, 22, 201, t, "F"),
        (3, 31, 300, t, "A"), (3, 31, 300, t, "B"), (3, 31, 300, None, "C"), (3, 31, 300, t, "G"),
        (4, 41, 400, t, "A"), (4, 41, 400, t, "B"), (4, 41, 400, t, "H"),
        (6, 61, 600, t, "A"), (6, 61, 600, t, "B"), (7, 71, 700, t, "A"), (7, 71, 700, t, "B"),
    ]
    pd.DataFrame({
        "ROW_ID": range(len(rx)), "SUBJECT_ID": [r[0] for r in rx], "HADM_ID": [r[1] for r in rx],
        "ICUSTAY_ID": [r[2] for r in rx], "STARTDATE": [r[3] for r in rx], "DRUG": "x",
        "NDC": [NDC.get(r[4], r[4]) for r in rx],
    }).to_csv(directory / "PRESCRIPTIONS.csv", index=False)
    dx = [
        (1, 12, "4019"), (1, 12, "25000"), (1, 12, "4019"), (1, 12, None), (1, 11, "4019"), (1, 11, "4280"),
        (2, 21, "4019"), (2, 21, "4280"), (2, 21, "5849"), (2, 22, "4019"), (2, 22, "25000"),
        (3, 31, "4019"), (3, 31, "25X1"), (3, 31, "41401"), (4, 41, "4019"), (4, 41, "4280"),
        (5, 51, "4019"), (5, 51, "V4581"), (6, 61, "E8809"), (7, 71, "4019"),
    ]
    pd.DataFrame({
        "ROW_ID": range(len(dx)), "SUBJECT_ID": [d[0] for d in dx], "HADM_ID": [d[1] for d in dx],
        "SEQ_NUM": range(len(dx)), "ICD9_CODE": [d[2] for d in dx],
    }).to_csv(directory / "DIAGNOSES_ICD.csv.gz", index=False)
    rxnorm = directory / "ndc2rxnorm_mapping.txt"  # GAMENet's form: a dict literal, u'' strings, empty RXCUIs
    rxnorm.write_text("{" + ", ".join(f"'{NDC[k]}': u'{v}'" for k, v in
                                      (("A", "1001"), ("B", "1002"), ("C", "1003"), ("D", "1004"), ("F", ""),
                                       ("G", "1005"), ("H", "1006"))) + "}")
    atc = directory / "ndc2atc_level4.csv"  # fabkury/ndc_map's columns; RXCUI 1004 twice: the first row wins
    pd.DataFrame({
        "YEAR": 2016, "MONTH": 1, "NDC": "x", "RXCUI": [1001, 1002, 1003, 1004, 1004, 1006],
        "ATC4": ["N02BE", "C07AB", "B01AC", "A10BA", "C10AA", "N0"],
    }).to_csv(atc, index=False)
    return {"ndc_to_rxnorm": rxnorm, "rxnorm_to_atc": atc}


def test_mimic_preparation_follows_the_authors_and_counts_every_drop(tmp_path: Path, capsys) -> None:
    maps = write_mimic(tmp_path / "mimic")
    df, report = prepare_mimic(tmp_path / "mimic", **maps, top_dx=4)
    assert df.HADM_ID.tolist() == [12, 11, 21, 31]  # chronological by ADMITTIME, not by HADM_ID
    assert df.ICD9_CODE.tolist() == [["4019", "25000"], ["4019", "4280"], ["4019", "4280"], ["4019", "41401"]]
    assert df.ATC4.tolist() == [["N02B", "C07A"], ["N02B", "A10B"], ["C07A", "A10B"], ["N02B", "C07A"]]
    expected = {
        "PRESCRIPTIONS: rows": 24,
        "PRESCRIPTIONS: rows without NDC or with NDC 0 (dropped)": 2,
        "PRESCRIPTIONS: rows without a valid STARTDATE (dropped)": 1,
        "PRESCRIPTIONS: rows after the first prescription time of their admission (dropped)": 2,
        "PRESCRIPTIONS: rows whose NDC ndc2rxnorm_mapping lacks (dropped)": 1,
        "PRESCRIPTIONS: rows whose NDC maps to an empty RXCUI (dropped)": 1,
        "PRESCRIPTIONS: rows whose RXCUI ndc2atc_level4 lacks (dropped)": 1,
        "PRESCRIPTIONS: rows whose ATC code is shorter than 4 characters or malformed (dropped)": 1,
        "DIAGNOSES_ICD: rows": 20,
        "DIAGNOSES_ICD: rows without ICD9_CODE (dropped)": 1,
        "DIAGNOSES_ICD: rows with a malformed ICD-9 code (dropped)": 1,
        # 4019 ×8, 4280 ×3, 25000 ×2, then a tie of single codes broken by the code string: 41401 stays
        "DIAGNOSES_ICD: codes outside the 4 most frequent (dropped)": 3,
        "DIAGNOSES_ICD: (admission, code) rows of those codes (dropped)": 3,
        "admissions with kept diagnoses but no kept medication (dropped)": 1,  # 51
        "admissions with kept medications but no kept diagnosis (dropped)": 1,  # 61
        "admissions with fewer than 2 distinct diagnoses (dropped)": 1,  # 71
        "admissions with fewer than 2 distinct medications (dropped)": 1,  # 22
        "admissions without a valid ADMITTIME in ADMISSIONS (dropped: their order is unknown)": 1,  # 41
        "admissions kept": 4, "patients kept": 3, "patients with 2 or more admissions": 1,
    }
    assert {k: report[k] for k in expected} == expected
    # the authors' exact grouping: the first prescription time of each ICU stay (admission 11 has two)
    by_stay, report = prepare_mimic(tmp_path / "mimic", **maps, top_dx=4, first_rx="icustay")
    assert by_stay.ATC4[1] == ["N02B", "A10B", "C07A"]
    assert report["PRESCRIPTIONS: rows after the first prescription time of their icustay (dropped)"] == 1
    # the command: the open table (with ADMITTIME), split files and the whole report on stdout
    out = tmp_path / "prep" / "visits.jsonl"
    prepare_ehr(out=str(out), mimic_dir=str(tmp_path / "mimic"), **{k: str(v) for k, v in maps.items()}, top_dx=4)
    printed = capsys.readouterr().out
    assert "1  PRESCRIPTIONS: rows whose NDC maps to an empty RXCUI (dropped)" in printed
    assert "wrote " + str(out) + ": 4 admissions of 3 patients" in printed
    pd.testing.assert_frame_equal(read_admissions(out).drop(columns="ADMITTIME"), df.drop(columns="ADMITTIME"))
    assert (out.parent / "eval-id.txt").is_file()
    with pytest.raises(ValueError, match="either --ndc_to_atc .* or both of GAMENet's files"):
        prepare_mimic(tmp_path / "mimic", ndc_to_rxnorm=maps["ndc_to_rxnorm"])


def test_the_one_step_ndc_map_gives_the_same_table(tmp_path: Path) -> None:
    maps = write_mimic(tmp_path / "mimic")
    one_step = tmp_path / "ndc_atc.csv"
    pd.DataFrame({"NDC": [NDC[k].lstrip("0") for k in "ABCD"], "ATC": ["N02BE01", "C07AB02", "B01AC06", "A10BA02"]}).to_csv(one_step, index=False)
    df, report = prepare_mimic(tmp_path / "mimic", ndc_to_atc=one_step, top_dx=4)
    reference, _ = prepare_mimic(tmp_path / "mimic", **maps, top_dx=4)
    pd.testing.assert_frame_equal(df, reference)
    assert report["PRESCRIPTIONS: rows whose NDC the NDC → ATC map lacks (dropped)"] == 4  # E, F, G, H


def test_the_ndc_to_rxnorm_file_is_parsed_not_run(tmp_path: Path) -> None:
    evil = tmp_path / "ndc2rxnorm_mapping.txt"
    marker = tmp_path / "ran"
    evil.write_text(f"{{'00054829725': __import__('pathlib').Path({str(marker)!r}).write_text('x')}}")
    with pytest.raises(ValueError, match="not a Python dict literal"):
        read_ndc_to_rxnorm(evil)
    assert not marker.exists()


def test_reading_shows_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys) -> None:
    write_mimic(tmp_path / "mimic")
    path = tmp_path / "mimic" / "PRESCRIPTIONS.csv"
    with caplog.at_level(logging.INFO, logger="multibert.core.progress"):
        read_mimic_table(path, ["NDC"])  # not a terminal: a log line
    size = path.stat().st_size / 1e3  # 1.1 kB
    assert f"reading PRESCRIPTIONS.csv: {size:.1f} kB of {size:.1f} kB (100%)" in caplog.text and "(done)" in caplog.text
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a bar
    read_mimic_table(path, ["NDC"])
    assert "reading PRESCRIPTIONS.csv: 100%" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- DDI
def authors_pickle(tmp_path: Path) -> Path:
    """GAMENet's data_final.pkl layout (ATC codes in a column named NDC); rows ordered by HADM_ID."""
    path = tmp_path / "authors" / "data_final.pkl"
    path.parent.mkdir()
    pd.DataFrame({
        "SUBJECT_ID": [1, 1, 2], "HADM_ID": [10, 11, 20],
        "ICD9_CODE": [["4019"], ["4019", "25000"], ["042"]],
        "NDC": [["N02B", "A01A"], ["A01A", "C07A"], ["C07A"]], "PRO_CODE": [["3731"], ["3893"], ["8872"]],
        "NDC_Len": [2, 2, 1],
    }).to_pickle(path)
    return path


def test_gamenets_ddi_pickle_needs_the_opt_in_and_is_converted(tmp_path: Path, capsys) -> None:
    data = authors_pickle(tmp_path)
    ddi = tmp_path / "authors" / "ddi_A_final.pkl"
    matrix = np.zeros((3, 3))
    matrix[0, 2] = matrix[2, 0] = 1  # GAMENet's order: N02B, A01A, C07A (first appearance over the rows)
    ddi.write_bytes(pickle.dumps(matrix))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        read_ddi_pickle(ddi, ["N02B", "A01A", "C07A"])
    with pytest.raises(ValueError, match=r"shape \(3, 3\), but the admission table has 2 medication codes"):
        read_ddi_pickle(ddi, ["N02B", "A01A"], allow_pickle=True)
    with pytest.raises(ValueError, match="convert it once to ATC pairs"):
        load_ddi(ddi, ["A01A", "C07A", "N02B"])
    out = tmp_path / "open" / "visits.parquet"
    prepare_ehr(out=str(out), pickle=str(data), allow_pickle=True, ddi_pickle=str(ddi), seed=0)
    assert "interacting medication pairs 1" in capsys.readouterr().out
    adjacency = load_ddi(out.parent / "ddi_pairs.csv", ["A01A", "C07A", "N02B"])
    torch.testing.assert_close(adjacency, torch.tensor([[0.0, 0, 0], [0, 0, 1], [0, 1, 0]]))
    with pytest.raises(ValueError, match="--ddi_pickle needs --pickle"):
        prepare_ehr(out=str(out), mimic_dir=str(tmp_path), ndc_to_atc="x", ddi_pickle=str(ddi))


def test_the_authors_pickle_gets_admission_times(tmp_path: Path) -> None:
    data = authors_pickle(tmp_path)
    admissions = tmp_path / "ADMISSIONS.csv"
    pd.DataFrame({"SUBJECT_ID": [1, 1, 2], "HADM_ID": [10, 11, 20],
                  "ADMITTIME": ["2105-01-01", "2101-01-01", "2100-01-01"]}).to_csv(admissions, index=False)
    out = tmp_path / "open" / "visits.jsonl"
    prepare_ehr(out=str(out), pickle=str(data), allow_pickle=True, admissions=str(admissions), seed=0)
    assert read_admissions(out).HADM_ID.tolist() == [11, 10, 20]  # admission 11 came first
    single = tmp_path / "single.jsonl"
    prepare_ehr(out=str(single), pickle=str(data), allow_pickle=True, pretrain_only=True)
    assert not (tmp_path / "train-id.txt").exists()


def test_twosides_interactions_by_gamenets_rule(tmp_path: Path) -> None:
    ddi = tmp_path / "drug-DDI.csv"
    pd.DataFrame({
        "STITCH 1": ["CID1", "CID2", "CID1", "CID3", "CID3", "CID3"],
        "STITCH 2": ["CID2", "CID3", "CID4", "CID1", "CID1", "CID2"],
        "Polypharmacy Side Effect": ["C3", "C2", "C2", "C1", "C1", "C1"],
        "Side Effect Name": ["rare", "less", "less", "common", "common", "common"],
    }).to_csv(ddi, index=False)
    cid = tmp_path / "drug-atc.csv"
    cid.write_text("CID1,N02BE01\nCID2,C07AB02,A10BA02\nCID3,B01AC06,N02BE51\n")
    pairs, counts = read_twosides(ddi, cid, ["A10B", "C07A", "N02B"], topk=2)
    # the 2 least frequent side effects (rare, less); CID3's only code in the vocabulary is N02B
    assert pairs == {("C07A", "N02B"), ("A10B", "N02B")}
    assert counts["side-effect types kept (least frequent)"] == 2 and counts["compound pairs with those side effects"] == 3
    assert counts["compound pairs whose both compounds map to medication codes"] == 2
    with pytest.raises(ValueError, match="a TWOSIDES table"):
        load_ddi(ddi, ["A10B", "C07A", "N02B"])
