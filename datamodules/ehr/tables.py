"""Reading, checking and preparing EHR admission tables for G-BERT (Shang et al., 2019, arXiv 1906.00346).

One table layout everywhere, the one the G-BERT and GAMENet authors publish: one row per admission with columns
``SUBJECT_ID``, ``HADM_ID``, ``ICD9_CODE`` (list of ICD-9 codes without dots), ``ATC4`` (list of 4-character ATC
codes), optionally ``PRO_CODE`` and ``ADMITTIME``. Three sources reach it:

(a) the MIMIC-III tables, preprocessed as GAMENet / G-BERT do (:mod:`datamodules.ehr.mimic`);
(b) the authors' pickled DataFrames (``data-multi-visit.pkl``, ``data-single-visit.pkl``): unpickling runs code, so
    they are read only with an explicit ``allow_pickle=True``;
(c) the open JSONL / Parquet form that (a) and (b) convert to (:func:`write_admissions`).

Order and identity are checked on every read (:func:`check_admissions`): IDs must be integers, a ``HADM_ID`` may
appear once, and a patient's visits are ordered by ``ADMITTIME`` when the table has it. Without it the row order is
the visit order, so each patient's rows must be consecutive and patients in ascending ``SUBJECT_ID`` order (a
reversed or shuffled file is refused rather than read with later visits as history). Errors name the rows,
counted from 1 in the table's order (for JSONL, the line number).

Patient-level split files ``train-id.txt``, ``eval-id.txt``, ``test-id.txt`` (one SUBJECT_ID per line) sit next to
the table. :func:`prepare_ehr` is the ``multibert gbert-prep`` command (it stays here, beside the format it writes,
though the module then runs a little over 400 lines; MIMIC-III's own rules are in :mod:`datamodules.ehr.mimic`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from datamodules.ehr.mimic import parse_times, prepare_mimic, read_mimic_table
from multibert.gbert.ddi import gamenet_code_order, read_ddi_pickle, read_twosides, write_ddi_pairs
from multibert.gbert.ontology import normalize_atc, normalize_icd9

log = logging.getLogger(__name__)

DX, RX, PX, TIME = "ICD9_CODE", "ATC4", "PRO_CODE", "ADMITTIME"
ID_COLUMNS = ("SUBJECT_ID", "HADM_ID")
ATC_LEVEL = 4  # characters of the medication codes G-BERT uses (ATC level 3, the authors' "ATC4")
SPLIT_FILES = {"train": "train-id.txt", "val": "eval-id.txt", "test": "test-id.txt"}
PICKLE_WARNING = (
    "loading a pickle runs arbitrary code from the file; pass allow_pickle=True (--data.allow_pickle=true, or "
    "`multibert gbert-prep --pickle FILE --allow_pickle true`) only for a file you trust, such as the G-BERT / "
    "GAMENet authors' data-multi-visit.pkl, and convert it once to Parquet or JSONL"
)
_SHOWN = 5  # rows named in one error message


def read_table_file(path: str | Path, allow_pickle: bool = False) -> pd.DataFrame:
    """The raw DataFrame of a ``.parquet``, ``.jsonl`` / ``.json`` lines or (with opt-in) ``.pkl`` file, unchecked.

    GAMENet's ``data_final.pkl`` names its ATC column ``NDC``; it is renamed ``ATC4`` (as G-BERT does).
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
        if RX not in df.columns and "NDC" in df.columns:
            log.info("%s: column NDC holds the ATC codes (GAMENet's naming): read as %s", path, RX)
            df = df.rename(columns={"NDC": RX})
    elif suffix == ".parquet":
        df = pd.read_parquet(path)
    elif suffix in (".jsonl", ".json", ".jsonl.gz"):
        # IDs as read (object): a malformed one is reported by check_admissions with its row, not by pandas
        df = pd.read_json(path, lines=True, dtype=False)
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r}; expected .parquet, .jsonl or .pkl (with opt-in)")
    return df


def read_admissions(path: str | Path, allow_pickle: bool = False, order: bool = True) -> pd.DataFrame:
    """Read and check an admission table (see :func:`check_admissions`).

    Args:
        path: ``.parquet``, ``.jsonl`` / ``.json`` lines, or ``.pkl`` with ``allow_pickle``.
        allow_pickle: confirm that a pickle is trusted (unpickling runs code from the file).
        order: check the visit order (see :func:`check_admissions`); ``False`` for pretraining-only tables, whose
            visits are used one at a time.

    Raises:
        ValueError: unknown suffix, a pickle without ``allow_pickle``, missing columns, malformed IDs or codes,
            duplicate HADM_IDs, visits out of order.
        FileNotFoundError: no such file.
    """
    return check_admissions(read_table_file(path, allow_pickle), str(path), order=order)


def _code_list(value, where: str, column: str) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"{where}: {column} must be a list of code strings, got {type(value).__name__} {value!r}")
    return list(value)


def _rows(positions, limit: int = _SHOWN) -> str:
    """'rows 3, 5 and 9' (1-based) for 0-based positions, the first ``limit`` of them."""
    shown = [str(int(p) + 1) for p in list(positions)[:limit]]
    more = len(positions) - len(shown)
    text = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return ("row " if len(shown) == 1 else "rows ") + text + (f" (and {more} more)" if more > 0 else "")


def _integer_ids(df: pd.DataFrame, column: str, source: str) -> np.ndarray:
    """The column as int64; a value that is no integer is an error naming its row."""
    raw = df[column]
    values = pd.to_numeric(raw.astype(str).str.strip() if raw.dtype == object else raw, errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy() | (values.fillna(0) % 1 != 0).to_numpy())
    if len(bad):
        examples = ", ".join(f"{raw.iloc[i]!r}" for i in bad[:_SHOWN])
        raise ValueError(
            f"{source}: {_rows(bad)}: {column} must be an integer ID, found {examples}; fix or remove those rows"
        )
    return values.to_numpy().astype(np.int64)


def _check_unique(subject: np.ndarray, hadm: np.ndarray, source: str) -> None:
    dup = pd.Series(hadm).duplicated(keep=False).to_numpy()
    if dup.any():
        first = hadm[dup][0]
        rows = np.flatnonzero(hadm == first)
        more = len(set(hadm[dup].tolist())) - 1
        raise ValueError(
            f"{source}: HADM_ID {first} appears in {_rows(rows)} (SUBJECT_ID {', '.join(map(str, subject[rows]))})"
            + (f"; {more} more HADM_IDs appear more than once" if more else "")
            + ": an admission must be one row; merge or remove the duplicates"
        )


def _check_row_order(subject: np.ndarray, hadm: np.ndarray, source: str) -> None:
    """Without an admission time the row order is the visit order: each patient's rows consecutive, patients in
    ascending SUBJECT_ID order. A warning when every patient's visits run in ascending HADM_ID order."""
    how = (
        f"without an {TIME} column the row order is the visit order, so a patient's visits must be consecutive "
        "rows and patients in ascending SUBJECT_ID order (as the authors' tables are): add an ADMITTIME column "
        "(`multibert gbert-prep --admissions ADMISSIONS.csv`) or sort the file by patient, then time"
    )
    change = np.flatnonzero(subject[1:] != subject[:-1]) + 1  # first row of each block after the first
    starts = np.concatenate([[0], change])
    seen = pd.Series(subject[starts]).duplicated(keep=False).to_numpy()
    if seen.any():
        again = subject[starts][seen][0]
        raise ValueError(f"{source}: SUBJECT_ID {again} is split: {_rows(np.flatnonzero(subject == again))} are not consecutive; {how}")
    down = change[subject[change] < subject[change - 1]]
    if len(down):
        i = int(down[0])
        raise ValueError(
            f"{source}: row {i + 1} (SUBJECT_ID {subject[i]}) follows row {i} (SUBJECT_ID {subject[i - 1]}): patients "
            f"out of order, so visits may be too (a reversed file?); {how}"
        )
    ends = np.concatenate([change, [len(subject)]])
    multi = [(a, b) for a, b in zip(starts, ends) if b - a > 1]
    # with 10+ multi-visit patients all in HADM_ID order, chance is no explanation: the table was sorted by it
    if len(multi) >= 10 and all((np.diff(hadm[a:b]) > 0).all() for a, b in multi):
        log.warning(
            "%s: no %s column, and every patient's visits are in ascending HADM_ID order. The authors' tables are "
            "ordered by HADM_ID (their pandas groupby sorts by it), which in MIMIC-III is not chronological: a "
            "visit's 'history' may hold later visits. If this table comes from MIMIC-III, add ADMITTIME "
            "(`multibert gbert-prep --pickle ... --admissions ADMISSIONS.csv`).", source, TIME,
        )


def _admission_times(df: pd.DataFrame, source: str) -> pd.Series:
    raw = df[TIME]
    times = parse_times(raw)
    bad = np.flatnonzero(times.isna().to_numpy())
    if len(bad):
        examples = ", ".join(f"{raw.iloc[i]!r}" for i in bad[:_SHOWN])
        raise ValueError(
            f"{source}: {_rows(bad)}: {TIME} is missing or not a date-time ({examples}); every admission needs its "
            "time to be ordered, or drop the column to use the row order"
        )
    return times.reset_index(drop=True)


def check_admissions(df: pd.DataFrame, source: str = "table", order: bool = True) -> pd.DataFrame:
    """Validate IDs, order and codes; normalise codes; drop (and count) visits without diagnoses or medications.

    ATC codes longer than 4 characters (G-BERT's ``data-single-visit.pkl`` holds 5-character ones) are cut to 4,
    and counted. The result is sorted by patient, then ``ADMITTIME`` when present, else the row order.

    Args:
        df: the raw table.
        source: how errors and log lines name the table.
        order: check the row order when there is no ``ADMITTIME`` (see the module docstring).
    """
    missing = [c for c in (*ID_COLUMNS, DX, RX) if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected SUBJECT_ID, HADM_ID, ICD9_CODE, ATC4")
    if len(df) == 0:
        raise ValueError(f"{source}: the table has no rows")
    subject = _integer_ids(df, "SUBJECT_ID", source)
    hadm = _integer_ids(df, "HADM_ID", source)
    _check_unique(subject, hadm, source)
    times = _admission_times(df, source) if TIME in df.columns else None
    if times is None and order:
        _check_row_order(subject, hadm, source)

    has_px = PX in df.columns
    out: dict[str, list] = {c: [] for c in (*ID_COLUMNS, DX, RX, *([PX] if has_px else []), *([TIME] if times is not None else []))}
    empty: Counter = Counter()
    cut = 0
    for i, (s, h, dx_raw, rx_raw) in enumerate(zip(subject, hadm, df[DX], df[RX])):
        where = f"{source}: row {i + 1}, SUBJECT_ID={s} HADM_ID={h}"
        dx_list, rx_list = _code_list(dx_raw, where, DX), _code_list(rx_raw, where, RX)
        try:
            dx = list(dict.fromkeys(normalize_icd9(c) for c in dx_list))
            rx = [normalize_atc(c) for c in rx_list]
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        long = sum(len(c) > ATC_LEVEL for c in rx)
        cut += long
        rx = list(dict.fromkeys(c[:ATC_LEVEL] for c in rx))
        if not dx or not rx:
            empty["no diagnoses" if not dx else "no medications"] += 1
            continue
        out["SUBJECT_ID"].append(int(s))
        out["HADM_ID"].append(int(h))
        out[DX].append(dx)
        out[RX].append(rx)
        if has_px:
            out[PX].append([str(c) for c in _code_list(df[PX].iloc[i], where, PX)])
        if times is not None:
            out[TIME].append(times.iloc[i])
    if cut:
        log.warning("%s: cut %d ATC codes longer than %d characters to ATC level 3 (%d characters)", source, cut, ATC_LEVEL, ATC_LEVEL)
    if empty:
        log.warning("%s: dropped %d admissions (%s)", source, sum(empty.values()), dict(empty))
    if not out["SUBJECT_ID"]:
        raise ValueError(f"{source}: no admission has both diagnoses and medications")
    table = pd.DataFrame(out)
    if times is not None:
        file_order = table.sort_values("SUBJECT_ID", kind="stable")
        table = table.sort_values(["SUBJECT_ID", TIME], kind="stable")
        moved = table.SUBJECT_ID[file_order.HADM_ID.to_numpy() != table.HADM_ID.to_numpy()].nunique()
        if moved:
            log.info("%s: the visits of %d patients ordered by %s (the rows listed them in another order)", source, moved, TIME)
        table = table.reset_index(drop=True)
    else:
        # stable: the row order within a patient is the visit order
        table = table.sort_values("SUBJECT_ID", kind="stable").reset_index(drop=True)
    table.attrs.update(df.attrs)
    return table


def write_admissions(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the open form: ``.parquet`` or ``.jsonl`` (one admission per line; ADMITTIME as ISO 8601 text)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, date_format="iso")
    else:
        raise ValueError(f"{path}: write .parquet or .jsonl")
    return path


def read_split_ids(directory: str | Path) -> dict[str, set[int]] | None:
    """The SUBJECT_IDs of each split from ``train-id.txt`` / ``eval-id.txt`` / ``test-id.txt``, or ``None`` if
    the directory has none of them. A patient listed in two files is an error (it would leak across splits)."""
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
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(splits[a] & splits[b])
        if both:
            raise ValueError(
                f"{directory}: SUBJECT_ID(s) {both[:_SHOWN]} are in both {SPLIT_FILES[a]} and {SPLIT_FILES[b]}"
                f"{f' ({len(both)} in all)' if len(both) > _SHOWN else ''}: a patient belongs to one split"
            )
    return splits


def split_patients(df: pd.DataFrame, seed: int) -> dict[str, set[int]]:
    """Seeded patient-level split of the multi-visit patients into 2/3 train, 1/6 validation, 1/6 test.

    Single-visit patients join ``train`` (they serve pretraining only, as in G-BERT). The authors' split
    (G-BERT's ``EDA.py``) takes the patients in SUBJECT_ID order, unshuffled (its ``shuffle`` is commented out);
    here the order is a seeded permutation.
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
    """Write the three split files; existing ones with other contents are never overwritten (they may belong to
    another table, and replacing them would move patients between splits)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    texts = {f: "".join(f"{s}\n" for s in sorted(splits[name])) for name, f in SPLIT_FILES.items()}
    differ = [f for f, text in texts.items() if (directory / f).is_file() and (directory / f).read_text() != text]
    if differ:
        raise ValueError(
            f"{directory} already holds split files {differ} with other patients; they may belong to another "
            "table: write to another folder, remove them, or reuse them with --split_dir "
            f"{directory} (a table for pretraining only takes --pretrain_only true and writes none)"
        )
    for f, text in texts.items():
        (directory / f).write_text(text)


def prepare_ehr(
    *,
    out: str,
    mimic_dir: str | None = None,
    ndc_to_atc: str | None = None,
    ndc_to_rxnorm: str | None = None,
    rxnorm_to_atc: str | None = None,
    pickle: str | None = None,
    allow_pickle: bool = False,
    admissions: str | None = None,
    pretrain_only: bool = False,
    split_dir: str | None = None,
    top_dx: int | None = 2000,
    top_rx: int | None = None,
    min_dx: int = 2,
    min_rx: int = 2,
    first_rx: Literal["admission", "icustay"] = "admission",
    with_procedures: bool = False,
    ddi_pickle: str | None = None,
    twosides: str | None = None,
    cid_to_atc: str | None = None,
    ddi_topk: int = 40,
    seed: int = 1203,
) -> None:
    """Prepare G-BERT visits: MIMIC-III tables or the authors' pickle → an open admission table + split files
    (+ a DDI pair file).

    Writes ``out`` (``.parquet`` or ``.jsonl``) and ``train-id.txt`` / ``eval-id.txt`` / ``test-id.txt`` beside it:
    copied from ``split_dir`` (or the pickle's folder) when those files exist there, else a seeded patient-level
    2/3 : 1/6 : 1/6 split of the multi-visit patients. With a DDI source, ``ddi_pairs.csv`` beside it
    (``--data.ddi_path``). Prints every drop.

    Args:
        out: the table to write, e.g. ``data/mimic/visits.parquet``.
        mimic_dir: folder with the MIMIC-III CSV tables (source a).
        ndc_to_atc: with ``mimic_dir``: a CSV with columns NDC and ATC; or else the next two.
        ndc_to_rxnorm: with ``mimic_dir``: GAMENet's ``ndc2rxnorm_mapping.txt``.
        rxnorm_to_atc: with ``mimic_dir``: GAMENet's ``ndc2atc_level4.csv``.
        pickle: the authors' preprocessed DataFrame, e.g. ``data-multi-visit.pkl`` (source b).
        allow_pickle: confirm that the pickles are trusted: unpickling runs code from the file.
        admissions: with ``pickle``: MIMIC-III's ADMISSIONS.csv, to order each patient's visits by ADMITTIME (the
            authors' tables are ordered by HADM_ID, which is not chronological).
        pretrain_only: the table serves pretraining only (``--data.pretrain_paths``; e.g. the authors'
            ``data-single-visit.pkl``): no split files are written.
        split_dir: folder holding split files to reuse.
        top_dx: MIMIC only: keep the most frequent diagnosis codes.
        top_rx: MIMIC only: keep the most frequent medication codes.
        min_dx: MIMIC only: fewest distinct diagnoses an admission needs.
        min_rx: MIMIC only: fewest distinct medications an admission needs.
        first_rx: MIMIC only: first prescription time per ``admission`` or per ICU stay (``icustay``).
        with_procedures: MIMIC only: add PRO_CODE and drop admissions without a procedure (GAMENet).
        ddi_pickle: GAMENet's ``ddi_A_final.pkl`` (needs ``pickle``, whose row order gives the matrix's code
            order, and ``allow_pickle``).
        twosides: TWOSIDES ``drug-DDI.csv`` (needs ``cid_to_atc``).
        cid_to_atc: ``drug-atc.csv``: STITCH compound id → ATC codes.
        ddi_topk: keep the interactions of this many least frequent side-effect types (GAMENet: 40).
        seed: seed of the patient split.
    """
    if (mimic_dir is None) == (pickle is None):
        raise ValueError("give exactly one source: --mimic_dir (with NDC → ATC maps) or --pickle (with --allow_pickle)")
    if ddi_pickle is not None and twosides is not None:
        raise ValueError("give one DDI source: --ddi_pickle or --twosides")
    if ddi_pickle is not None and pickle is None:
        raise ValueError(
            "--ddi_pickle needs --pickle: the matrix's rows follow the code order of the authors' table it was built "
            "from; with --mimic_dir build the interactions from their source with --twosides and --cid_to_atc"
        )
    if twosides is not None and cid_to_atc is None:
        raise ValueError("--twosides needs --cid_to_atc drug-atc.csv (STITCH compound id → ATC codes)")
    report = None
    if mimic_dir is not None:
        table, report = prepare_mimic(
            mimic_dir, ndc_to_atc=ndc_to_atc, ndc_to_rxnorm=ndc_to_rxnorm, rxnorm_to_atc=rxnorm_to_atc,
            top_dx=top_dx, top_rx=top_rx, min_dx=min_dx, min_rx=min_rx, first_rx=first_rx,
            with_procedures=with_procedures,
        )
        raw, source = table, f"MIMIC-III tables in {mimic_dir}"
    else:
        raw, source = read_table_file(pickle, allow_pickle), str(pickle)
        split_dir = split_dir or str(Path(pickle).parent)
        if admissions is not None:
            # missing admissions leave ADMITTIME empty: check_admissions names their rows
            adm = read_mimic_table(Path(admissions), ["HADM_ID", TIME]).dropna(subset=["HADM_ID"])
            times = adm.set_index(adm.HADM_ID.astype("int64"))[TIME].groupby(level=0).first()
            raw = raw.assign(**{TIME: pd.to_numeric(raw.HADM_ID, errors="coerce").map(times)})
    df = check_admissions(raw, source, order=not pretrain_only)
    path = write_admissions(df, out)
    lines = [f"wrote {path}: {_summary(df)}"]
    if report is not None:
        lines.insert(0, f"MIMIC-III preparation (every step's count):\n{report}")
    if ddi_pickle is not None or twosides is not None:
        codes = sorted({c for v in df[RX] for c in v})
        if ddi_pickle is not None:
            order = gamenet_code_order(raw[RX])
            pairs = {(a, b) for a, b in read_ddi_pickle(ddi_pickle, order, allow_pickle) if a in codes and b in codes}
            counts = {"interacting medication pairs": len(pairs)}
        else:
            pairs, counts = read_twosides(twosides, cid_to_atc, codes, ddi_topk)
        ddi = write_ddi_pairs(pairs, path.parent / "ddi_pairs.csv")
        lines.append(f"wrote {ddi}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" (--data.ddi_path {ddi})")
    if pretrain_only:
        lines.append(f"no split files written: a pretraining-only table (--data.pretrain_paths [{path}])")
    else:
        splits = read_split_ids(split_dir) if split_dir else None
        if splits is None:
            splits = split_patients(df, seed)
        write_split_ids(splits, path.parent)
        lines.append(
            f"split files in {path.parent}: train {len(splits['train'])}, val {len(splits['val'])}, "
            f"test {len(splits['test'])} patients"
        )
    print("\n".join(lines))


def _summary(df: pd.DataFrame) -> str:
    visits = df.groupby("SUBJECT_ID").size()
    return (
        f"{len(df)} admissions of {len(visits)} patients ({int((visits > 1).sum())} with 2+ visits), "
        f"{len({c for v in df[DX] for c in v})} diagnosis and {len({c for v in df[RX] for c in v})} medication codes"
        + ("" if TIME in df.columns else f"; no {TIME}: visit order = row order")
    )
