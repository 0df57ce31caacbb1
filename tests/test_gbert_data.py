"""G-BERT data paths (tables, splits, masking, bad input) and the pretrain → fine-tune → test → predict CLI run."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from datamodules.ehr.datamodule import MASK_ID, NUM_SPECIAL, EHRDataModule, PretrainCollator
from datamodules.ehr.synthetic import generate_cohort
from datamodules.ehr.tables import prepare_ehr, read_admissions, write_admissions

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "gbert"


def small_table() -> pd.DataFrame:
    return pd.DataFrame({
        "SUBJECT_ID": [1, 1, 2, 3, 3, 3],
        "HADM_ID": [10, 11, 20, 30, 31, 32],
        "ICD9_CODE": [["250.01", "4019"], ["4019"], ["042"], ["V45.81"], ["25001", "E880.9"], []],
        "ATC4": [["N02B"], ["N02B", "A10B"], ["C07A"], ["A10B"], ["N02B"], ["C07A"]],
    })


def test_synthetic_cohort_shape_and_label() -> None:
    df = generate_cohort(num_patients=6350, seed=0)
    visits = df.groupby("SUBJECT_ID").size()
    assert df.attrs["synthetic"] is True and "SYNTHETIC" in df.attrs["note"]
    assert len(visits) == 6350 and 13500 < len(df) < 16500 and 2.1 < visits.mean() < 2.6
    assert 1900 <= len({c for v in df.ICD9_CODE for c in v}) <= 1960
    assert 140 <= len({c for v in df.ATC4 for c in v}) <= 145
    assert 11 < df.ICD9_CODE.map(len).mean() < 15 and 11 < df.ATC4.map(len).mean() < 15
    pd.testing.assert_frame_equal(generate_cohort(num_patients=50, seed=3), generate_cohort(num_patients=50, seed=3))


def test_open_formats_round_trip_and_drop_empty_visits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for suffix in (".jsonl", ".parquet"):
        path = write_admissions(small_table(), tmp_path / f"visits{suffix}")
        with caplog.at_level(logging.WARNING):
            df = read_admissions(path)
        assert len(df) == 5  # the visit without diagnoses is dropped ...
        assert "dropped 1 admissions ({'no diagnoses': 1})" in caplog.text  # ... and counted
        assert df.ICD9_CODE[0] == ["25001", "4019"] and df.ICD9_CODE.iloc[3] == ["V4581"]


def test_pickle_needs_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "data-multi-visit.pkl"
    small_table().to_pickle(path)
    with pytest.raises(ValueError, match="refusing to unpickle: loading a pickle runs arbitrary code"):
        read_admissions(path)
    assert len(read_admissions(path, allow_pickle=True)) == 5
    out = tmp_path / "open" / "visits.parquet"
    prepare_ehr(out=str(out), pickle=str(path), allow_pickle=True, seed=0)
    assert len(pd.read_parquet(out)) == 5
    assert {p.name for p in out.parent.iterdir()} == {"visits.parquet", "train-id.txt", "eval-id.txt", "test-id.txt"}


@pytest.mark.parametrize(
    "column, value, message",
    [("ICD9_CODE", ["25X.1"], "SUBJECT_ID=1 HADM_ID=10: malformed ICD-9 code '25X.1'"),
     ("ATC4", ["N2B"], "SUBJECT_ID=1 HADM_ID=10: malformed ATC code 'N2B'"),
     ("ATC4", "N02B", "ATC4 must be a list of code strings")],
)
def test_malformed_codes_name_the_row(tmp_path: Path, column: str, value, message: str) -> None:
    df = small_table()
    df[column] = df[column].astype(object)
    df.at[0, column] = value
    path = write_admissions(df, tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=message):
        read_admissions(path)


def test_missing_column_and_unknown_format(tmp_path: Path) -> None:
    path = write_admissions(small_table().drop(columns="ATC4"), tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['ATC4'\]"):
        read_admissions(path)
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(ValueError, match="unknown table format '.csv'"):
        read_admissions(tmp_path / "t.csv")


def test_split_files_and_unknown_codes_in_predict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_admissions(small_table(), tmp_path / "visits.jsonl")
    for name, ids in (("train-id.txt", [1]), ("eval-id.txt", [3]), ("test-id.txt", [2])):
        (tmp_path / name).write_text("".join(f"{i}\n" for i in ids))
    dm = EHRDataModule(path=str(path), task="recommend", batch_size=4)
    assert dm.splits == {"train": {1}, "val": {3}, "test": {2}}
    assert dm.dx_codes == ["042", "25001", "4019", "E8809", "V4581"] and dm.rx_codes == ["A10B", "C07A", "N02B"]
    assert dm.vocab_size == 3 + 5 + 3
    with pytest.raises(ValueError, match="the test split has no patient with 2 or more visits"):
        dm.dataset("recommend", "test")
    batch = next(iter(dm.val_dataloader()))  # patient 3: two kept visits → one target
    assert batch.target_visit.tolist() == [1] and batch.hadm_id.tolist() == [31]
    assert batch.rx_labels[0].tolist() == [0.0, 0.0, 1.0]
    other = write_admissions(pd.DataFrame({
        "SUBJECT_ID": [7, 7, 7], "HADM_ID": [1, 2, 3], "ICD9_CODE": [["4019", "9999"], ["042"], ["042"]],
        "ATC4": [["N02B", "B01A"], ["R03A"], ["C07A"]],
    }), tmp_path / "new.jsonl")
    dm = EHRDataModule(path=str(path), task="recommend", predict_path=str(other))
    with caplog.at_level(logging.WARNING):
        patients = dm.dataset("recommend", "predict")
    assert [[h for h, _, _ in visits] for _, visits in patients.patients] == [[1, 3]]
    assert "'unknown dx codes': 1" in caplog.text and "'unknown rx codes': 2" in caplog.text
    assert "'visits left empty': 1" in caplog.text


def test_seeded_split_and_pretraining_masks() -> None:
    dm = EHRDataModule(task="pretrain", synthetic_patients=300, batch_size=64)
    counts = {k: len(v) for k, v in dm.splits.items()}
    visits = dm.table.groupby("SUBJECT_ID").size()
    multi = int((visits > 1).sum())
    assert counts["val"] == round(multi / 6) and counts["train"] == round(multi * 2 / 3) + int((visits == 1).sum())
    assert not (dm.splits["train"] & dm.splits["test"]) and not (dm.splits["val"] & dm.splits["test"])
    nd, nr = len(dm.dx_codes), len(dm.rx_codes)
    torch.manual_seed(0)
    items = [dm.dataset("pretrain", "train")[i] for i in range(200)]
    batch = PretrainCollator(nd, nr)(items)
    ids = batch.visits.input_ids
    B = len(items)
    originals = [np.concatenate([[1], d]) for d, _, _ in items] + [np.concatenate([[1], r]) for _, r, _ in items]
    changed = masked = 0
    for row, orig in enumerate(originals):
        seq = ids[row, : len(orig)].numpy()
        diff = seq != orig
        assert seq[0] == 1  # [CLS] is never masked
        replaced = seq[diff & (seq != MASK_ID)]
        lo, hi = (NUM_SPECIAL, NUM_SPECIAL + nd) if row < B else (NUM_SPECIAL + nd, NUM_SPECIAL + nd + nr)
        assert ((replaced >= lo) & (replaced < hi)).all()  # random replacements stay within the code type
        masked += int((seq == MASK_ID).sum())
        changed += int(diff.sum())
    # of the chosen positions 80 % become [MASK], 10 % a random code, 10 % stay: [MASK] / changed ≈ 0.8 / 0.9
    assert abs(masked / changed - 0.8 / 0.9) < 0.05, (masked, changed)
    # single-visit patients pretrain: every visit of a train patient (and of patients in no split) is a pretraining item
    train_visits = dm.table.SUBJECT_ID.isin(dm.splits["train"]).sum()
    assert len(dm.dataset("pretrain", "train")) == train_visits
    # labels are the full, unmasked sets
    assert batch.dx_labels.sum().item() == sum(len(d) for d, _, _ in items)
    assert batch.rx_labels.sum().item() == sum(len(r) for _, r, _ in items)


def run_cli(*args: str) -> str:
    """Run ``multibert ARGS`` as a user would, in a fresh process (one thread); return its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "multibert.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_cli_pretrain_finetune_test_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
               "--trainer.max_epochs=1"]
    run_cli("fit", "-c", str(CONFIGS / "tiny_pretrain.yaml"), *trainer, "--trainer.default_root_dir=pre")
    pre = next(Path("pre").rglob("*.ckpt"))
    best_checkpoint = ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint", "--trainer.callbacks.monitor=val/prauc",
                       "--trainer.callbacks.mode=max", "--trainer.callbacks.filename=best-{epoch}"]
    run_cli("fit", "-c", str(CONFIGS / "tiny.yaml"), *trainer, *best_checkpoint, "--trainer.default_root_dir=fine", f"--model.init_from={pre}")
    best = next(Path("fine").rglob("best-*.ckpt"))
    rx = EHRDataModule(synthetic_patients=200).rx_codes
    Path("ddi.csv").write_text("".join(f"{a},{b}\n" for a, b in zip(rx[::2], rx[1::2])))
    table = run_cli("test", "-c", str(CONFIGS / "tiny.yaml"), *trainer, f"--ckpt_path={best}", "--data.ddi_path=ddi.csv")
    for name in ("test/jaccard", "test/prauc", "test/f1", "test/ddi_rate"):
        value = float(table.split(name)[1].split("│")[1])
        assert 0.0 <= value <= 1.0, (name, value)
    run_cli("predict", "-c", str(CONFIGS / "tiny.yaml"), *trainer, f"--ckpt_path={best}", "--data.predict_output=rec.jsonl")
    records = [json.loads(line) for line in Path("rec.jsonl").read_text().splitlines()]
    assert records and {"SUBJECT_ID", "HADM_ID", "recommended"} <= set(records[0])
    probs = [p for r in records for _, p in r["recommended"]]
    assert probs and all(0.3 <= p <= 1.0 for p in probs)
    run_cli("gbert-map", "--checkpoint", str(best), "--out", "codes.png")
    assert Path("codes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(best, weights_only=False)
    score = next(v for k, v in ckpt["callbacks"].items() if "ModelCheckpoint" in k)["best_model_score"].item()
    assert 0.0 <= score <= 1.0 and math.isfinite(score)
    assert ckpt["hyper_parameters"]["adapter"]["init_args"]["rx_codes"] == rx  # the vocabulary travels with it


def test_ddi_rate_from_pairs_file(tmp_path: Path) -> None:
    from multibert.gbert.task import load_ddi

    pairs = tmp_path / "ddi.csv"
    pairs.write_text("atc_a,atc_b\nN02BE01,A10BA02\nC07A,N02B\nZ99A,N02B\n")
    adj = load_ddi(pairs, ["A10B", "C07A", "N02B"])
    expected = torch.tensor([[0.0, 0, 1], [0, 0, 1], [1, 1, 0]])
    torch.testing.assert_close(adj, expected)
