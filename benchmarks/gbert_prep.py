"""``multibert gbert-prep`` at MIMIC-III's size, on SYNTHETIC MIMIC-shaped CSVs (no patient data exists here).

Writes ADMISSIONS / DIAGNOSES_ICD / PRESCRIPTIONS with MIMIC-III v1.4's row counts (58,976 admissions of 46,520
patients, 651,047 diagnosis rows, 4,156,450 prescription rows) and GAMENet-shaped mapping files, then times the
preparation (reading with progress, first prescription time, NDC → RxNorm → ATC, top-2000 diagnoses, the 2 + 2
filter, ordering, checks, writing) and the datamodule's first read of the result. The last line printed is one JSON
object.

    python benchmarks/gbert_prep.py --workdir /tmp/mimic_synth          # full size (~1 min to write the CSVs)
    python benchmarks/gbert_prep.py --workdir /tmp/mimic_small --scale 0.1
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.ehr.datamodule import EHRDataModule
from datamodules.ehr.tables import prepare_ehr


def write_synthetic_mimic(folder: Path, scale: float, seed: int = 0) -> dict[str, Path]:
    """MIMIC-shaped SYNTHETIC tables and mapping files; a few percent of rows hit each drop rule."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n_adm, n_subj = int(58_976 * scale), int(46_520 * scale)
    subject = np.sort(rng.integers(1, n_subj + 1, n_adm))
    hadm = rng.permutation(np.arange(100_001, 100_001 + n_adm))  # not chronological, as in MIMIC-III
    admit = pd.Timestamp("2100-01-01") + pd.to_timedelta(rng.integers(0, 100 * 365 * 24, n_adm), unit="h")
    pd.DataFrame({"ROW_ID": np.arange(n_adm), "SUBJECT_ID": subject, "HADM_ID": hadm,
                  "ADMITTIME": admit.strftime("%Y-%m-%d %H:%M:%S")}).to_csv(folder / "ADMISSIONS.csv", index=False)

    n_dx = int(651_047 * scale)
    codes = np.array([f"{c:03d}{d}" for c in range(1, 1000) for d in ("", "0", "1", "9", "00", "01", "81")])[:6_984]
    p = 1.0 / np.arange(1, len(codes) + 1) ** 1.1
    which = rng.integers(0, n_adm, n_dx)
    pd.DataFrame({"ROW_ID": np.arange(n_dx), "SUBJECT_ID": subject[which], "HADM_ID": hadm[which],
                  "SEQ_NUM": 1, "ICD9_CODE": rng.choice(codes, n_dx, p=p / p.sum())}).to_csv(
        folder / "DIAGNOSES_ICD.csv.gz", index=False)

    n_rx, n_ndc = int(4_156_450 * scale), 4_200
    ndcs = np.array([f"{n:011d}" for n in rng.choice(10**10, n_ndc, replace=False)])
    which = rng.integers(0, n_adm, n_rx)
    start = admit[which] + pd.to_timedelta(rng.integers(0, 4, n_rx) * 24, unit="h")
    ndc = rng.choice(ndcs, n_rx, p=(q := 1.0 / np.arange(1, n_ndc + 1)) / q.sum()).astype(object)
    ndc[rng.random(n_rx) < 0.02] = "0"
    pd.DataFrame({"ROW_ID": np.arange(n_rx), "SUBJECT_ID": subject[which], "HADM_ID": hadm[which],
                  "ICUSTAY_ID": 200_000 + which, "STARTDATE": start.strftime("%Y-%m-%d %H:%M:%S"),
                  "DRUG_TYPE": "MAIN", "DRUG": "synthetic", "NDC": ndc}).to_csv(folder / "PRESCRIPTIONS.csv", index=False)

    rxcui = {str(n): str(1000 + i) if i % 17 else "" for i, n in enumerate(ndcs[: int(n_ndc * 0.9)])}
    (folder / "ndc2rxnorm_mapping.txt").write_text(repr(rxcui))
    atc = [f"{g}{rng.integers(1, 20):02d}{chr(65 + rng.integers(8))}{chr(65 + rng.integers(5))}" for g in rng.choice(list("ABCDGHJLMNPRSV"), n_ndc)]
    pd.DataFrame({"YEAR": 2016, "MONTH": 1, "NDC": ndcs, "RXCUI": [1000 + i for i in range(n_ndc)], "ATC4": atc}).to_csv(
        folder / "ndc2atc_level4.csv", index=False)
    return {"ndc_to_rxnorm": folder / "ndc2rxnorm_mapping.txt", "rxnorm_to_atc": folder / "ndc2atc_level4.csv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/mimic_synth")
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.workdir)
    t0 = time.perf_counter()
    maps = write_synthetic_mimic(work / "mimic", args.scale)
    t1 = time.perf_counter()
    out = work / "prepared" / "visits.parquet"
    for f in out.parent.glob("*-id.txt"):
        f.unlink()
    prepare_ehr(out=str(out), mimic_dir=str(work / "mimic"), **{k: str(v) for k, v in maps.items()})
    t2 = time.perf_counter()
    dm = EHRDataModule(path=str(out))
    t3 = time.perf_counter()
    vocab = dm.vocab_size
    t4 = time.perf_counter()
    print(json.dumps({
        "synthetic": True, "scale": args.scale, "write_csv_s": round(t1 - t0, 1), "gbert_prep_s": round(t2 - t1, 1),
        "datamodule_init_s": round(t3 - t2, 3), "first_read_s": round(t4 - t3, 2), "admissions": len(dm.table),
        "vocab_size": vocab, "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }))


if __name__ == "__main__":
    main()
