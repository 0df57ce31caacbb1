"""Reading, checking and preparing EHR admission tables for G-BERT (Shang et al., 2019, arXiv 1906.00346).

One table layout everywhere, the one the G-BERT and GAMENet authors publish: one row per admission, sorted by
patient and then chronologically, with columns ``SUBJECT_ID``, ``HADM_ID``, ``ICD9_CODE`` (list of ICD-9 codes
without dots), ``ATC4`` (list of 4-character ATC codes) and optionally ``PRO_CODE``. Three sources reach it:

(a) the MIMIC-III tables ADMISSIONS, DIAGNOSES_ICD, PRESCRIPTIONS (optionally PROCEDURES_ICD) plus an NDC → ATC
    map, preprocessed as GAMENet / G-BERT do (:func:`prepare_mimic`);
(b) the authors' pickled DataFrame (``data-multi-visit.pkl``): unpickling runs code, so it is read only with an
    explicit ``allow_pickle=True``;
(c) the open JSONL / Parquet form that (a) and (b) convert to (:func:`write_admissions`).

Patient-level split files ``train-id.txt``, ``eval-id.txt``, ``test-id.txt`` (one SUBJECT_ID per line) sit next to
the table. :func:`prepare_ehr` is the ``multibert gbert-prep`` command.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from multibert.gbert.ontology import normalize_atc, normalize_icd9

log = logging.getLogger(__name__)

DX, RX, PX = "ICD9_CODE", "ATC4", "PRO_CODE"
ID_COLUMNS = ("SUBJECT_ID", "HADM_ID")
SPLIT_FILES = {"train": "train-id.txt", "val": "eval-id.txt", "test": "test-id.txt"}
PICKLE_WARNING = (
    "loading a pickle runs arbitrary code from the file; pass allow_pickle=True (--data.allow_pickle=true, or "
    "`multibert gbert-prep --pickle FILE --allow_pickle true`) only for a file you trust, such as the G-BERT / "
    "GAMENet authors' data-multi-visit.pkl, and convert it once to Parquet or JSONL"
)


def read_admissions(path: str | Path, allow_pickle: bool = False) -> pd.DataFrame:
    """Read and check an admission table (``.parquet``, ``.jsonl`` / ``.json`` lines, or ``.pkl`` with opt-in).

    Codes are normalised (dots removed, upper case); admissions without diagnoses or without medications are
    dropped and counted. Row order within a patient is kept (it is the visit order).

    Raises:
        ValueError: unknown suffix, a pickle without ``allow_pickle``, missing columns, malformed codes.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"admission table {path} does not exist")
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".pkl", ".pickle"):
        if not allow_pickle:
            raise ValueError(f"{path}: refusing to unpickle: {PICKLE_WARNING}")
        df = pd.read_pickle(path)
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"{path}: the pickle holds a {type(df).__name__}, expected a pandas DataFrame")
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix in (".jsonl", ".json", ".jsonl.gz"):
        df = pd.read_json(path, lines=True, dtype={"SUBJECT_ID": "int64", "HADM_ID": "int64"})
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; expected .parquet, .jsonl or .pkl (with opt-in)")
    return check_admissions(df, str(path))


def _code_list(value, where: str, column: str) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{where}: {column} must be a list of code strings, got {type(value).__name__} {value!r}")
    return list(value)


def check_admissions(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """Validate columns and codes, normalise codes, drop (and count) visits without diagnoses or medications."""
    missing = [c for c in (*ID_COLUMNS, DX, RX) if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected SUBJECT_ID, HADM_ID, ICD9_CODE, ATC4")
    out = {c: [] for c in (*ID_COLUMNS, DX, RX)}
    has_px = PX in df.columns
    if has_px:
        out[PX] = []
    empty = Counter()
    for row in df.itertuples(index=False):
        subject, hadm = int(getattr(row, "SUBJECT_ID")), int(getattr(row, "HADM_ID"))
        where = f"{source}: SUBJECT_ID={subject} HADM_ID={hadm}"
        try:
            dx = list(dict.fromkeys(normalize_icd9(c) for c in _code_list(getattr(row, DX), where, DX)))
            rx = list(dict.fromkeys(normalize_atc(c) for c in _code_list(getattr(row, RX), where, RX)))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if not dx or not rx:
            empty["no diagnoses" if not dx else "no medications"] += 1
            continue
        out["SUBJECT_ID"].append(subject)
        out["HADM_ID"].append(hadm)
        out[DX].append(dx)
        out[RX].append(rx)
        if has_px:
            out[PX].append([str(c) for c in _code_list(getattr(row, PX), where, PX)])
    if empty:
        log.warning("%s: dropped %d admissions (%s)", source, sum(empty.values()), dict(empty))
    if not out["SUBJECT_ID"]:
        raise ValueError(f"{source}: no admission has both diagnoses and medications")
    table = pd.DataFrame(out)
    # stable sort: the file's order within a patient is the visit order
    table = table.sort_values("SUBJECT_ID", kind="stable").reset_index(drop=True)
    table.attrs.update(df.attrs)
    return table


def write_admissions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the open form: ``.parquet`` or ``.jsonl`` (one admission per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(f"{path}: write .parquet or .jsonl")
    return path


def read_split_ids(directory: str | Path) -> dict[str, set[int]] | None:
    """The SUBJECT_IDs of each split from ``train-id.txt`` / ``eval-id.txt`` / ``test-id.txt``, or ``None`` if
    the directory has none of them."""
    directory = Path(directory)
    files = {k: directory / v for k, v in SPLIT_FILES.items()}
    if not any(f.is_file() for f in files.values()):
        return None
    absent = [str(f) for f in files.values() if not f.is_file()]
    if absent:
        raise ValueError(f"split files incomplete: {absent} missing (need all of {list(SPLIT_FILES.values())})")
    splits = {}
    for name, f in files.items():
        lines = [line.strip() for line in f.read_text().splitlines() if line.strip()]
        bad = [line for line in lines if not line.isdigit()]
        if bad:
            raise ValueError(f"{f}: expected one integer SUBJECT_ID per line, found {bad[:3]}")
        splits[name] = {int(line) for line in lines}
    return splits


def split_patients(df: pd.DataFrame, seed: int) -> dict[str, set[int]]:
    """Seeded patient-level split of the multi-visit patients into 2/3 train, 1/6 validation, 1/6 test.

    Single-visit patients join ``train`` (they serve pretraining only, as in G-BERT).
    """
    visits = df.groupby("SUBJECT_ID").size()
    multi = np.array(sorted(visits.index[visits > 1]))
    single = set(visits.index[visits == 1].tolist())
    order = np.random.default_rng(seed).permutation(multi)
    n_train, n_val = round(len(order) * 2 / 3), round(len(order) / 6)
    return {
        "train": set(order[:n_train].tolist()) | single,
        "val": set(order[n_train : n_train + n_val].tolist()),
        "test": set(order[n_train + n_val :].tolist()),
    }


def write_split_ids(splits: dict[str, set[int]], directory: str | Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, f in SPLIT_FILES.items():
        (directory / f).write_text("".join(f"{s}\n" for s in sorted(splits[name])))


# ----------------------------------------------------------------------------------------------- MIMIC-III
def _read_table(directory: Path, name: str, columns: Iterable[str]) -> pd.DataFrame:
    for candidate in (f"{name}.csv", f"{name}.csv.gz", f"{name.lower()}.csv", f"{name.lower()}.csv.gz"):
        path = directory / candidate
        if path.is_file():
            df = pd.read_csv(path, dtype=str, usecols=lambda c: c.upper() in set(columns))
            df.columns = [c.upper() for c in df.columns]
            missing = set(columns) - set(df.columns)
            if missing:
                raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
            return df
    raise FileNotFoundError(f"{directory}: no {name}.csv or {name}.csv.gz")


def read_ndc_to_atc(path: str | Path) -> dict[str, str]:
    """An NDC → ATC map: a CSV with columns ``NDC`` and ``ATC`` (any ATC level of at least 4 characters).

    NDCs are compared as 11-digit strings (leading zeros restored).
    """
    df = pd.read_csv(path, dtype=str)
    df.columns = [c.upper() for c in df.columns]
    if not {"NDC", "ATC"} <= set(df.columns):
        raise ValueError(f"{path}: expected columns NDC and ATC, found {list(df.columns)}")
    df = df.dropna(subset=["NDC", "ATC"])
    return {n.strip().zfill(11): a.strip().upper() for n, a in zip(df.NDC, df.ATC)}


def prepare_mimic(
    mimic_dir: str | Path,
    ndc_to_atc: str | Path,
    top_dx: int | None = 2000,
    top_rx: int | None = None,
    with_procedures: bool = False,
) -> pd.DataFrame:
    """Build the admission table from MIMIC-III, following GAMENet's / G-BERT's preprocessing.

    Steps (each drop is counted in the log): prescriptions without an NDC or with NDC 0 are dropped; NDCs are mapped
    to ATC and cut to ATC level 3 (4 characters); unmapped NDCs are dropped; only the ``top_dx`` most frequent
    diagnosis codes (and ``top_rx`` medications, if set) are kept; admissions without diagnoses or without
    medications are dropped; visits are ordered by ADMITTIME.

    Args:
        mimic_dir: folder with ADMISSIONS, DIAGNOSES_ICD, PRESCRIPTIONS (and PROCEDURES_ICD) as .csv or .csv.gz.
        ndc_to_atc: CSV with columns NDC and ATC.
        top_dx: keep this many most frequent diagnosis codes (GAMENet: 2000); ``None`` keeps all.
        top_rx: keep this many most frequent medication codes; ``None`` keeps all.
        with_procedures: add a PRO_CODE column from PROCEDURES_ICD.
    """
    mimic_dir = Path(mimic_dir)
    adm = _read_table(mimic_dir, "ADMISSIONS", ["SUBJECT_ID", "HADM_ID", "ADMITTIME"])
    dx = _read_table(mimic_dir, "DIAGNOSES_ICD", ["SUBJECT_ID", "HADM_ID", "ICD9_CODE"])
    rx = _read_table(mimic_dir, "PRESCRIPTIONS", ["SUBJECT_ID", "HADM_ID", "NDC"])
    ndc_map = read_ndc_to_atc(ndc_to_atc)

    n_rx = len(rx)
    rx = rx.dropna(subset=["NDC", "HADM_ID"])
    rx = rx[rx.NDC.str.strip().str.strip("0") != ""]
    atc = rx.NDC.str.strip().str.zfill(11).map(ndc_map)
    unmapped = atc.isna()
    log.info("PRESCRIPTIONS: %d rows, %d without NDC, %d with unmapped NDC", n_rx, n_rx - len(rx), int(unmapped.sum()))
    rx = rx.assign(ATC4=atc.str[:4])[~unmapped]
    bad_atc = ~rx.ATC4.str.match(r"^[A-Z]\d{2}[A-Z]$")
    if bad_atc.any():
        log.warning("dropped %d prescriptions whose ATC code is shorter than level 3", int(bad_atc.sum()))
        rx = rx[~bad_atc]

    dx = dx.dropna(subset=["ICD9_CODE", "HADM_ID"])
    normalized, malformed = [], 0
    for code in dx.ICD9_CODE:
        try:
            normalized.append(normalize_icd9(code))
        except ValueError:
            normalized.append(None)
            malformed += 1
    dx = dx.assign(ICD9_CODE=normalized).dropna(subset=["ICD9_CODE"])
    if malformed:
        log.warning("DIAGNOSES_ICD: dropped %d malformed ICD-9 codes", malformed)
    if top_dx:
        keep = set(dx.ICD9_CODE.value_counts().index[:top_dx])
        log.info("keeping the %d most frequent diagnosis codes (%d rows dropped)", len(keep), int((~dx.ICD9_CODE.isin(keep)).sum()))
        dx = dx[dx.ICD9_CODE.isin(keep)]
    if top_rx:
        keep = set(rx.ATC4.value_counts().index[:top_rx])
        rx = rx[rx.ATC4.isin(keep)]

    def grouped(df: pd.DataFrame, column: str) -> pd.Series:
        return df.groupby(["SUBJECT_ID", "HADM_ID"])[column].agg(lambda s: list(dict.fromkeys(s)))

    table = pd.concat([grouped(dx, "ICD9_CODE"), grouped(rx, "ATC4")], axis=1)
    if with_procedures:
        px = _read_table(mimic_dir, "PROCEDURES_ICD", ["SUBJECT_ID", "HADM_ID", "ICD9_CODE"]).dropna()
        table = table.join(grouped(px.rename(columns={"ICD9_CODE": PX}), PX))
    n_adm = len(table)
    table = table.dropna(subset=[DX, RX]).reset_index()
    log.info("admissions: %d with any code, %d dropped for lacking diagnoses or medications", n_adm, n_adm - len(table))
    adm = adm.dropna(subset=["HADM_ID"])
    order = adm.assign(ADMITTIME=pd.to_datetime(adm.ADMITTIME)).set_index("HADM_ID").ADMITTIME
    table["ADMITTIME"] = table.HADM_ID.map(order)
    table = table.sort_values(["SUBJECT_ID", "ADMITTIME", "HADM_ID"]).drop(columns="ADMITTIME")
    table[["SUBJECT_ID", "HADM_ID"]] = table[["SUBJECT_ID", "HADM_ID"]].astype("int64")
    if PX in table:
        table[PX] = table[PX].map(lambda v: v if isinstance(v, list) else [])
    return check_admissions(table.reset_index(drop=True), f"MIMIC-III tables in {mimic_dir}")


def prepare_ehr(
    *,
    out: str,
    mimic_dir: str | None = None,
    ndc_to_atc: str | None = None,
    pickle: str | None = None,
    allow_pickle: bool = False,
    split_dir: str | None = None,
    top_dx: int | None = 2000,
    top_rx: int | None = None,
    with_procedures: bool = False,
    seed: int = 1203,
) -> None:
    """Prepare G-BERT visits: MIMIC-III tables or the authors' pickle → an open admission table + split files.

    Writes ``out`` (``.parquet`` or ``.jsonl``) and ``train-id.txt`` / ``eval-id.txt`` / ``test-id.txt`` beside it:
    copied from ``split_dir`` (or the pickle's folder) when those files exist there, else a seeded patient-level
    2/3 : 1/6 : 1/6 split of the multi-visit patients.

    Args:
        out: the table to write, e.g. ``data/mimic/visits.parquet``.
        mimic_dir: folder with the MIMIC-III CSV tables (source a).
        ndc_to_atc: CSV with columns NDC and ATC (needed with ``mimic_dir``).
        pickle: the authors' preprocessed DataFrame, e.g. ``data-multi-visit.pkl`` (source b).
        allow_pickle: confirm that the pickle is trusted: unpickling runs code from the file.
        split_dir: folder holding split files to reuse.
        top_dx: MIMIC only: keep the most frequent diagnosis codes.
        top_rx: MIMIC only: keep the most frequent medication codes.
        with_procedures: MIMIC only: add PRO_CODE.
        seed: seed of the patient split.
    """
    if (mimic_dir is None) == (pickle is None):
        raise ValueError("give exactly one source: --mimic_dir (with --ndc_to_atc) or --pickle (with --allow_pickle)")
    if mimic_dir is not None:
        if ndc_to_atc is None:
            raise ValueError("--mimic_dir needs --ndc_to_atc, a CSV with columns NDC and ATC")
        df = prepare_mimic(mimic_dir, ndc_to_atc, top_dx, top_rx, with_procedures)
    else:
        df = read_admissions(pickle, allow_pickle=allow_pickle)
        split_dir = split_dir or str(Path(pickle).parent)
    path = write_admissions(df, out)
    splits = read_split_ids(split_dir) if split_dir else None
    if splits is None:
        splits = split_patients(df, seed)
    write_split_ids(splits, path.parent)
    visits = df.groupby("SUBJECT_ID").size()
    print(
        f"wrote {path}: {len(df)} admissions of {len(visits)} patients ({int((visits > 1).sum())} with 2+ visits), "
        f"{len({c for v in df[DX] for c in v})} diagnosis and {len({c for v in df[RX] for c in v})} medication codes; "
        f"split files in {path.parent} (train {len(splits['train'])}, val {len(splits['val'])}, "
        f"test {len(splits['test'])} patients)"
    )
