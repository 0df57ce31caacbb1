"""MIMIC-III → G-BERT's admission table, prepared the way GAMENet (Shang et al., AAAI 2019; sjy1203/GAMENet,
``data/EDA.ipynb``) and G-BERT (jshang123/G-Bert, ``data/EDA.py``) prepare it, with every drop counted.

The authors' rules, and where this module differs on purpose:

- **Prescriptions**: rows with NDC ``0`` are dropped; of each admission only the prescriptions that start at its
  first prescription time (earliest ``STARTDATE``) are kept. The authors group by ICU stay (``ICUSTAY_ID``), which
  ``first_rx="icustay"`` reproduces; the default groups by admission. The authors forward-fill missing values from
  the previous row first, which hands a missing NDC, start date or ICU stay the *neighbouring prescription's* (of
  another drug, sometimes another admission); here such rows are dropped and counted.
- **NDC → ATC**, with the public mapping files GAMENet ships, accepted as given: ``ndc2rxnorm_mapping.txt`` (a
  Python dict literal ``{'<11-digit NDC>': '<RXCUI>', ...}``; some RXCUIs are empty) and ``ndc2atc_level4.csv``
  (columns ``YEAR, MONTH, NDC, RXCUI, ATC4``, from fabkury/ndc_map; its ``ATC4`` is the 5-character ATC level 4;
  of several rows of one RXCUI the first wins, as in the authors' code). The authors read the dict with ``eval``;
  here it is parsed as a literal (``ast.literal_eval``), so the file cannot run code. A one-step CSV with columns
  ``NDC, ATC`` is accepted too. ATC codes are cut to 4 characters (ATC level 3, the authors' "ATC4"; G-BERT's
  single-visit table cuts to 5 instead, a slip :mod:`datamodules.ehr.tables` repairs when reading it).
- **Diagnoses**: the ``top_dx`` (2,000) most frequent codes over all MIMIC admissions are kept, counted as
  (admission, code) pairs before any other filter, as the authors do (``loc[:1999]`` of the sorted counts: 2,000
  codes); ties are broken by the code string here (the authors' sort leaves them in arbitrary order).
- **Admissions** need kept diagnoses and kept medications, and at least ``min_dx`` (2) distinct diagnoses and
  ``min_rx`` (2) distinct medications (G-BERT's ``filter_patient``, applied to its single-visit table, where it
  drops the whole patient, i.e. the admission; GAMENet's multi-visit table has no such filter: ``min_dx=1,
  min_rx=1`` reproduces it); with ``with_procedures`` also a procedure (GAMENet's table keeps only admissions with
  one).
- **Order**: each patient's visits are ordered by ``ADMITTIME`` from ADMISSIONS. The authors' tables come out of a
  pandas ``groupby`` and are ordered by ``HADM_ID``, which in MIMIC-III is not chronological.
- **Patients**: one table holds single- and multi-visit patients; the datamodule uses single-visit patients for
  pretraining only, which is what the authors' two tables (``data-multi-visit.pkl`` / ``data-single-visit.pkl``)
  are for.
"""

from __future__ import annotations

import ast
import gzip
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Iterable, Literal

import pandas as pd

from multibert.core.progress import progress_bar
from multibert.gbert.ontology import normalize_icd9

log = logging.getLogger(__name__)

KEYS = ["SUBJECT_ID", "HADM_ID"]


# ------------------------------------------------------------------------------------------------ drop report
class DropReport:
    """The ordered list of what a preparation dropped (or kept), each line also logged."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, int]] = []

    def add(self, what: str, count: int) -> None:
        self.lines.append((what, int(count)))
        log.info("%s: %d", what, count)

    def __getitem__(self, what: str) -> int:
        return dict(self.lines)[what]

    def __str__(self) -> str:
        width = max((len(f"{n:,}") for _, n in self.lines), default=1)
        return "\n".join(f"  {n:>{width},}  {what}" for what, n in self.lines)


# ------------------------------------------------------------------------------------------------ reading
def find_table(directory: Path, name: str) -> Path:
    """``NAME.csv`` / ``NAME.csv.gz`` (either case) in ``directory``."""
    for candidate in (f"{name}.csv", f"{name}.csv.gz", f"{name.lower()}.csv", f"{name.lower()}.csv.gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise FileNotFoundError(f"{directory}: no {name}.csv or {name}.csv.gz (MIMIC-III's table {name} is needed)")


def read_mimic_table(path: Path, columns: Iterable[str], optional: Iterable[str] = ()) -> pd.DataFrame:
    """The named columns of one MIMIC CSV as strings, read in chunks with progress (bytes of the file on disk)."""
    wanted = set(columns) | set(optional)
    chunks = []
    with open(path, "rb") as raw, (gzip.open(raw) if path.suffix == ".gz" else nullcontext(raw)) as stream:
        bar = progress_bar(path.stat().st_size, f"reading {path.name}", interval=10.0)
        done = 0
        for chunk in pd.read_csv(stream, dtype=str, usecols=lambda c: c.upper() in wanted, chunksize=500_000):
            chunks.append(chunk)
            bar.update(raw.tell() - done)
            done = raw.tell()
        bar.close()
    if chunks:
        df = pd.concat(chunks, ignore_index=True)
    else:  # a header without rows
        df = pd.read_csv(path, dtype=str, usecols=lambda c: c.upper() in wanted, nrows=0)
    df.columns = [c.upper() for c in df.columns]
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return df


def parse_times(values: pd.Series) -> pd.Series:
    """Date-times, NaT where missing or unparseable. One format inferred for the column (fast); values it does not
    fit (a date without a time among date-times, say) are parsed one by one."""
    times = pd.to_datetime(values, errors="coerce")
    retry = times.isna() & values.notna()
    if retry.any():
        times = times.astype("datetime64[ns]")
        times[retry] = pd.to_datetime(values[retry], errors="coerce", format="mixed")
    return times


def _int_ids(df: pd.DataFrame, path: Path, report: DropReport, table: str) -> pd.DataFrame:
    """SUBJECT_ID / HADM_ID as int64; rows without HADM_ID are dropped (counted), a non-integer ID is an error."""
    no_hadm = df.HADM_ID.isna() | df.SUBJECT_ID.isna()
    report.add(f"{table}: rows without SUBJECT_ID or HADM_ID (dropped)", no_hadm.sum())
    df = df[~no_hadm]
    for column in KEYS:
        values = pd.to_numeric(df[column].str.strip(), errors="coerce")
        bad = values.isna() | (values % 1 != 0)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise ValueError(f"{path}: line {df.index[row] + 2}: {column} {df[column].iloc[row]!r} is not an integer")
        df = df.assign(**{column: values.astype("int64")})
    return df


def read_ndc_to_atc(path: str | Path) -> dict[str, str]:
    """A one-step NDC → ATC map: a CSV with columns ``NDC`` and ``ATC`` (any ATC level of at least 4 characters);
    NDCs are compared as 11-digit strings (leading zeros restored)."""
    df = pd.read_csv(path, dtype=str)
    df.columns = [c.upper() for c in df.columns]
    if not {"NDC", "ATC"} <= set(df.columns):
        raise ValueError(f"{path}: expected columns NDC and ATC, found {list(df.columns)}")
    df = df.dropna(subset=["NDC", "ATC"])
    return {n.strip().zfill(11): a.strip().upper() for n, a in zip(df.NDC, df.ATC)}


def read_ndc_to_rxnorm(path: str | Path) -> dict[str, str]:
    """GAMENet's ``ndc2rxnorm_mapping.txt``: a Python dict literal of NDC → RXCUI strings (empty RXCUI: unmapped).

    Parsed with ``ast.literal_eval`` (the authors ``eval`` it: a file that holds code would run).
    """
    text = Path(path).read_text()
    try:
        mapping = ast.literal_eval(text)
    except (ValueError, SyntaxError) as err:
        raise ValueError(
            f"{path}: not a Python dict literal of NDC → RXCUI strings, as GAMENet's ndc2rxnorm_mapping.txt is "
            f"({type(err).__name__}: {err})"
        ) from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise ValueError(f"{path}: expected a dict of NDC strings to RXCUI strings, as GAMENet's ndc2rxnorm_mapping.txt")
    return {k.strip().zfill(11): v.strip() for k, v in mapping.items()}


def read_rxnorm_to_atc(path: str | Path) -> dict[str, str]:
    """``ndc2atc_level4.csv`` (columns ``YEAR, MONTH, NDC, RXCUI, ATC4``; only RXCUI and ATC4 are used): RXCUI →
    ATC code, the first row of each RXCUI winning, as in the authors' ``drop_duplicates(subset=['RXCUI'])``."""
    df = pd.read_csv(path, dtype=str)
    df.columns = [c.upper() for c in df.columns]
    if not {"RXCUI", "ATC4"} <= set(df.columns):
        raise ValueError(f"{path}: expected columns RXCUI and ATC4 (ndc2atc_level4.csv layout), found {list(df.columns)}")
    df = df.dropna(subset=["RXCUI", "ATC4"])
    rxcui = df.RXCUI.str.strip().str.replace(r"\.0$", "", regex=True)
    out: dict[str, str] = {}
    for r, atc in zip(rxcui, df.ATC4.str.strip().str.upper()):
        out.setdefault(r, atc)
    return out


# ------------------------------------------------------------------------------------------------ steps
def _prescriptions(path: Path, first_rx: str, report: DropReport) -> pd.DataFrame:
    """Prescription rows at the first prescription time of their admission (or ICU stay): SUBJECT_ID, HADM_ID, NDC."""
    rx = read_mimic_table(path, KEYS + ["NDC", "STARTDATE"], optional=["ICUSTAY_ID"])
    report.add("PRESCRIPTIONS: rows", len(rx))
    rx = _int_ids(rx, path, report, "PRESCRIPTIONS")
    ndc = rx.NDC.str.strip()
    no_ndc = ndc.isna() | (ndc.str.strip("0") == "")
    report.add("PRESCRIPTIONS: rows without NDC or with NDC 0 (dropped)", no_ndc.sum())
    rx = rx.assign(NDC=ndc)[~no_ndc]
    start = parse_times(rx.STARTDATE)
    report.add("PRESCRIPTIONS: rows without a valid STARTDATE (dropped)", start.isna().sum())
    rx = rx.assign(STARTDATE=start)[start.notna()]
    group = list(KEYS)
    if first_rx == "icustay":
        if "ICUSTAY_ID" not in rx:
            raise ValueError(f"{path}: first_rx='icustay' needs the ICUSTAY_ID column")
        # a prescription outside any ICU stay forms its admission's own group (the authors forward-fill the stay)
        rx = rx.assign(ICUSTAY_ID=rx.ICUSTAY_ID.fillna("outside ICU"))
        group.append("ICUSTAY_ID")
    first = rx.groupby(group, sort=False).STARTDATE.transform("min")
    later = rx.STARTDATE != first
    report.add(f"PRESCRIPTIONS: rows after the first prescription time of their {first_rx} (dropped)", later.sum())
    return rx[~later][KEYS + ["NDC"]]


def _map_to_atc(
    rx: pd.DataFrame,
    report: DropReport,
    ndc_to_atc: str | Path | None,
    ndc_to_rxnorm: str | Path | None,
    rxnorm_to_atc: str | Path | None,
) -> pd.DataFrame:
    """NDC → 4-character ATC; unmapped rows dropped, counted by reason."""
    ndc = rx.NDC.str.zfill(11)
    if ndc_to_atc is not None:
        atc = ndc.map(read_ndc_to_atc(ndc_to_atc))
        report.add("PRESCRIPTIONS: rows whose NDC the NDC → ATC map lacks (dropped)", atc.isna().sum())
    else:
        rxcui = ndc.map(read_ndc_to_rxnorm(ndc_to_rxnorm))
        report.add("PRESCRIPTIONS: rows whose NDC ndc2rxnorm_mapping lacks (dropped)", rxcui.isna().sum())
        empty = rxcui == ""
        report.add("PRESCRIPTIONS: rows whose NDC maps to an empty RXCUI (dropped)", empty.sum())
        atc = rxcui.map(read_rxnorm_to_atc(rxnorm_to_atc)).where(~empty)
        report.add("PRESCRIPTIONS: rows whose RXCUI ndc2atc_level4 lacks (dropped)", (atc.isna() & rxcui.notna() & ~empty).sum())
    atc = atc.str.upper().str[:4]
    malformed = atc.notna() & ~atc.str.match(r"^[A-Z]\d{2}[A-Z]$", na=False)
    report.add("PRESCRIPTIONS: rows whose ATC code is shorter than 4 characters or malformed (dropped)", malformed.sum())
    keep = atc.notna() & ~malformed
    return rx.assign(ATC4=atc)[keep][KEYS + ["ATC4"]].drop_duplicates()


def _diagnoses(path: Path, top_dx: int | None, report: DropReport) -> pd.DataFrame:
    dx = read_mimic_table(path, KEYS + ["ICD9_CODE"])
    report.add("DIAGNOSES_ICD: rows", len(dx))
    dx = _int_ids(dx, path, report, "DIAGNOSES_ICD")
    report.add("DIAGNOSES_ICD: rows without ICD9_CODE (dropped)", dx.ICD9_CODE.isna().sum())
    dx = dx.dropna(subset=["ICD9_CODE"])
    normal = {}
    for code in dx.ICD9_CODE.unique():  # a few thousand distinct codes, not one call per row
        try:
            normal[code] = normalize_icd9(code)
        except ValueError:
            normal[code] = None
    dx = dx.assign(ICD9_CODE=dx.ICD9_CODE.map(normal))
    report.add("DIAGNOSES_ICD: rows with a malformed ICD-9 code (dropped)", dx.ICD9_CODE.isna().sum())
    dx = dx.dropna(subset=["ICD9_CODE"]).drop_duplicates(KEYS + ["ICD9_CODE"])
    if top_dx:
        counts = dx.ICD9_CODE.value_counts()
        # most frequent first, ties by code: a deterministic top-k
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        keep = {code for code, _ in ranked[:top_dx]}
        rare = ~dx.ICD9_CODE.isin(keep)
        report.add(f"DIAGNOSES_ICD: codes outside the {top_dx} most frequent (dropped)", max(len(counts) - len(keep), 0))
        report.add("DIAGNOSES_ICD: (admission, code) rows of those codes (dropped)", rare.sum())
        dx = dx[~rare]
    return dx


def _lists(df: pd.DataFrame, column: str) -> pd.Series:
    """One list of codes per admission, in order of first appearance."""
    return df.groupby(KEYS, sort=False)[column].agg(list)


def prepare_mimic(
    mimic_dir: str | Path,
    *,
    ndc_to_atc: str | Path | None = None,
    ndc_to_rxnorm: str | Path | None = None,
    rxnorm_to_atc: str | Path | None = None,
    top_dx: int | None = 2000,
    top_rx: int | None = None,
    min_dx: int = 2,
    min_rx: int = 2,
    first_rx: Literal["admission", "icustay"] = "admission",
    with_procedures: bool = False,
) -> tuple[pd.DataFrame, DropReport]:
    """Build the admission table from the MIMIC-III CSVs (see the module docstring for the rules).

    Args:
        mimic_dir: folder with ADMISSIONS, DIAGNOSES_ICD, PRESCRIPTIONS (and PROCEDURES_ICD) as .csv or .csv.gz.
        ndc_to_atc: a one-step CSV with columns NDC, ATC; or else both of the next two.
        ndc_to_rxnorm: GAMENet's ``ndc2rxnorm_mapping.txt``.
        rxnorm_to_atc: GAMENet's ``ndc2atc_level4.csv``.
        top_dx: keep the most frequent diagnosis codes (the authors: 2000); ``None`` keeps all.
        top_rx: keep the most frequent medication codes (the authors: all); ``None`` keeps all.
        min_dx: fewest distinct diagnoses an admission needs (the authors: 2).
        min_rx: fewest distinct medications an admission needs (the authors: 2).
        first_rx: keep the prescriptions at the first prescription time of each ``admission`` or of each ICU stay
            (``icustay``, the authors' exact grouping).
        with_procedures: add PRO_CODE from PROCEDURES_ICD and drop admissions without a procedure (GAMENet).

    Returns:
        the table (SUBJECT_ID, HADM_ID, ICD9_CODE, ATC4, [PRO_CODE], ADMITTIME; ordered by patient, then
        ADMITTIME) and the report of every step's count.
    """
    if first_rx not in ("admission", "icustay"):
        raise ValueError(f"first_rx={first_rx!r}: choose 'admission' or 'icustay'")
    gamenet = (ndc_to_rxnorm, rxnorm_to_atc)
    if (ndc_to_atc is not None and gamenet != (None, None)) or (ndc_to_atc is None and None in gamenet):
        raise ValueError(
            "map NDCs to ATC with either --ndc_to_atc (a CSV with columns NDC, ATC) or both of GAMENet's files: "
            "--ndc_to_rxnorm ndc2rxnorm_mapping.txt --rxnorm_to_atc ndc2atc_level4.csv"
        )
    mimic_dir = Path(mimic_dir)
    for f in (ndc_to_atc, ndc_to_rxnorm, rxnorm_to_atc):
        if f is not None and not Path(f).is_file():
            raise FileNotFoundError(f"mapping file {f} does not exist")
    report = DropReport()

    rx = _prescriptions(find_table(mimic_dir, "PRESCRIPTIONS"), first_rx, report)
    rx = _map_to_atc(rx, report, ndc_to_atc, ndc_to_rxnorm, rxnorm_to_atc)
    if top_rx:
        keep = [code for code, _ in sorted(rx.ATC4.value_counts().items(), key=lambda kv: (-kv[1], kv[0]))[:top_rx]]
        report.add(f"PRESCRIPTIONS: medication rows outside the {top_rx} most frequent codes (dropped)", (~rx.ATC4.isin(keep)).sum())
        rx = rx[rx.ATC4.isin(keep)]
    dx = _diagnoses(find_table(mimic_dir, "DIAGNOSES_ICD"), top_dx, report)

    table = pd.concat([_lists(dx, "ICD9_CODE"), _lists(rx, "ATC4")], axis=1)
    has_dx, has_rx = table.ICD9_CODE.notna(), table.ATC4.notna()
    report.add("admissions with kept diagnoses but no kept medication (dropped)", (has_dx & ~has_rx).sum())
    report.add("admissions with kept medications but no kept diagnosis (dropped)", (has_rx & ~has_dx).sum())
    table = table[has_dx & has_rx]
    if with_procedures:
        px_path = find_table(mimic_dir, "PROCEDURES_ICD")
        px = read_mimic_table(px_path, KEYS + ["ICD9_CODE"])
        px = _int_ids(px, px_path, report, "PROCEDURES_ICD").dropna(subset=["ICD9_CODE"])
        px = px.assign(PRO_CODE=px.ICD9_CODE.str.strip()).drop_duplicates(KEYS + ["PRO_CODE"])
        table = table.join(_lists(px, "PRO_CODE"))
        report.add("admissions without a procedure (dropped, as GAMENet)", table.PRO_CODE.isna().sum())
        table = table[table.PRO_CODE.notna()]
    few_dx = table.ICD9_CODE.map(len) < min_dx
    report.add(f"admissions with fewer than {min_dx} distinct diagnoses (dropped)", few_dx.sum())
    few_rx = ~few_dx & (table.ATC4.map(len) < min_rx)
    report.add(f"admissions with fewer than {min_rx} distinct medications (dropped)", few_rx.sum())
    table = table[~few_dx & ~few_rx].reset_index()

    adm_path = find_table(mimic_dir, "ADMISSIONS")
    adm = read_mimic_table(adm_path, KEYS + ["ADMITTIME"])
    adm = _int_ids(adm, adm_path, report, "ADMISSIONS")
    times = pd.Series(parse_times(adm.ADMITTIME).to_numpy(), index=adm.HADM_ID)
    table["ADMITTIME"] = table.HADM_ID.map(times[~times.index.duplicated()])
    report.add("admissions without a valid ADMITTIME in ADMISSIONS (dropped: their order is unknown)", table.ADMITTIME.isna().sum())
    table = table.dropna(subset=["ADMITTIME"])
    table = table.sort_values(["SUBJECT_ID", "ADMITTIME"], kind="stable").reset_index(drop=True)
    visits = table.groupby("SUBJECT_ID").size()
    report.add("admissions kept", len(table))
    report.add("patients kept", len(visits))
    report.add("patients with 2 or more admissions", (visits > 1).sum())
    report.add("distinct diagnosis codes", len({c for v in table.ICD9_CODE for c in v}))
    report.add("distinct medication codes", len({c for v in table.ATC4 for c in v}))
    return table, report
