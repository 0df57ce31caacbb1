"""The world a SYNTHETIC EHR cohort is drawn from (:mod:`datamodules.ehr.synthetic`): the code universe, the latent
clinical conditions with their diagnosis codes and drug slots, and the ward routines of MIMIC-III's care units.
Nothing here is patient data.

The hand-written part (76 conditions with real ICD-9-CM codes and real ATC groups, the ATC universe, the ward
routines, the drug groups suited to each ICD-9 chapter) is data: ``datamodules/data/synthetic_ehr_world.json``. Its
fields:

- ``conditions``: one object per condition: ``name``, ``kind`` (``chronic`` / ``acute``), ``primary`` and ``extra``
  codes as ``"CODE:rate"`` (rate ≈ per 100 visits in MIMIC-III; it only orders the codes, the frequency curve
  :func:`dx_rate_curve` sets the values), drug ``slots`` as ``"p ATC ATC ..."`` (used with probability ``p`` when
  the condition is active; options weighted 1, 1/2, 1/3, ...), ``units`` (log-odds the condition adds to each care
  unit), ``blocks`` (routine drugs withheld while it is active), ``cluster`` (comorbidity cluster of a chronic
  condition), ``raised_by`` (chronic conditions that make an acute one likelier, by a factor);
- ``atc_codes``: the ATC universe (4-character codes, i.e. ATC level 3), most relevant first;
- ``ward_routine``: drugs most admissions get whatever the diagnoses (base rate per visit at severity 1), and
  ``unit_routine``: how each intensive care unit departs from it; ``unit_prior``: share of admissions per unit;
- ``chapter_drugs``: ``[first category, last category, "ATC level-2 groups"]``: the drugs minor conditions of an
  ICD-9 chapter may drive.

:func:`build_world` adds about 520 rare siblings of the hand-written primary codes (same category, same drugs) and
procedural minor conditions in the unused ICD-9 categories until the universe holds ``num_dx`` codes, and ranks
every code on the diagnosis frequency curve.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multibert.gbert.ontology import ICD9_SECTIONS, icd9_category, icd9_path

WORLD_FILE = Path(__file__).resolve().parents[1] / "data" / "synthetic_ehr_world.json"

#: The diagnosis rank-frequency curve: rate ∝ (rank + q)^-s up to rank r0, then falling with exponent t. Fitted to
#: the real table's top-10 share 16.6 %, top-100 share 52 %, log-log slope -0.74 over ranks 1-200 and about 8
#: occurrences of the 1,958th code (see :func:`dx_rate_curve`).
_DX_CURVE = (4.62, 0.886, 272.0, 1.553)


@dataclass(frozen=True)
class WorldTables:
    """The hand-written part of the world (:data:`WORLD_FILE`; the module docstring describes each field)."""

    conditions: list[dict[str, Any]]
    atc_codes: list[str]
    ward_routine: dict[str, float]
    unit_routine: dict[str, dict[str, float]]
    unit_prior: dict[str, float]
    chapter_drugs: list[list[str]]


@functools.cache
def world_tables() -> WorldTables:
    """:data:`WORLD_FILE`, read once."""
    data = {k: v for k, v in json.loads(WORLD_FILE.read_text()).items() if not k.startswith("_")}
    return WorldTables(**{**data, "atc_codes": data["atc_codes"].split()})


@dataclass
class Slot:
    """A therapeutic choice: used with probability ``p`` when its condition is active; one option per patient."""

    p: float
    options: np.ndarray  # drug indices
    cdf: np.ndarray


@dataclass
class Condition:
    """A latent clinical condition, its diagnosis codes (indices into the code list) and its drug slots."""

    name: str
    chronic: bool
    cluster: str
    primary: list[int]
    extra: list[int]
    slots: list[Slot]
    blocks: list[int] = field(default_factory=list)
    raised_by: dict[str, float] = field(default_factory=dict)
    units: np.ndarray | None = None  # (U,) log-odds the condition adds to each care unit
    # derived from the frequency curve (:func:`datamodules.ehr.synthetic.calibrate`)
    activity: float = 0.0  # per-visit probability of being active
    primary_cdf: np.ndarray | None = None
    extra_p: np.ndarray | None = None


@dataclass
class World:
    """Codes, conditions and ward routine: everything a cohort is drawn from."""

    dx_codes: list[str]
    rx_codes: list[str]
    conditions: list[Condition]
    routine: np.ndarray  # (U, Vr) base rate of each drug as the routine of each care unit
    unit_prior: np.ndarray  # (U,) log prior of each care unit
    dx_rate: np.ndarray  # (Vd,) target share of all diagnosis occurrences of each code


# ----------------------------------------------------------------------------------------------- the world
def dx_rate_curve(n: int, params: tuple[float, float, float, float] = _DX_CURVE) -> np.ndarray:
    """Share of all diagnosis occurrences taken by the code of each rank 1..n (sums to 1).

    ``(rank + q)^-s`` up to rank ``r0``, then ``∝ (rank + q)^-t``, continuous at ``r0``. The parameters were
    fitted by least squares (scipy) to the real top-10 and top-100 shares, the OLS log-log slope over ranks 1-200
    and 8 expected occurrences of the rank-1,958 code in a 15,016-visit cohort.
    """
    q, s, r0, t = params
    r = np.arange(1, n + 1, dtype=float)
    f = np.where(r <= r0, (r + q) ** -s, (r0 + q) ** -s * ((r + q) / (r0 + q)) ** -t)
    return f / f.sum()


def _parse_codes(spec: str) -> list[tuple[str, float]]:
    return [(c, float(w)) for c, _, w in (item.partition(":") for item in spec.split())]


def _categories(sections=ICD9_SECTIONS) -> list[tuple[str, str]]:
    """Every (category, section) of the ICD-9 tree."""
    out = []
    for section in sections:
        first, _, last = section.partition("-")
        last = last or first
        prefix = first[0] if first[0] in "VE" else ""
        width = len(first) - len(prefix)
        for k in range(int(first[len(prefix):]), int(last[len(prefix):]) + 1):
            out.append((f"{prefix}{k:0{width}d}", section))
    return out


def _siblings(category: str, n: int, taken: set[str], rng: np.random.Generator) -> list[str]:
    """Up to ``n`` new codes in ``category``: 4 characters (category + 1 digit) or 5 (+ 2 digits); E codes get one
    digit, as in ICD-9-CM."""
    out: list[str] = []
    five = category[0] != "E" and rng.random() < 0.5  # a category subdivided to the 5th digit, or not
    for _ in range(20 * n):
        if len(out) == n:
            break
        digits = 2 if five else 1
        code = category + "".join(str(d) for d in rng.integers(0, 10, digits))
        if code not in taken:
            taken.add(code)
            out.append(code)
    return out


def _chapter_groups(category: str) -> list[str]:
    T = world_tables()
    for first, last, groups in T.chapter_drugs:
        if first[0] in "VE":
            if category[0] == first[0]:
                return groups.split()
        elif category[0].isdigit() and first <= category <= last:
            return groups.split()
    return []


def _unit_votes(votes: dict[str, float]) -> np.ndarray:
    T = world_tables()
    unknown = set(votes) - set(T.unit_prior)
    if unknown:
        raise ValueError(f"unknown care unit(s) {sorted(unknown)}; known: {list(T.unit_prior)}")
    return np.array([votes.get(u, 0.0) for u in T.unit_prior])


def _chapter_units(category: str) -> dict[str, float]:
    """Care-unit votes of a minor condition: cardiac, trauma and surgical chapters lean to their units."""
    if not category[0].isdigit():
        return {}
    if "390" <= category <= "459":
        return {"CCU": 0.3}
    if category >= "800":
        return {"TSICU": 0.5}
    if "140" <= category <= "239" or "520" <= category <= "579":
        return {"SICU": 0.3}
    return {}


def _slot(p: float, options: list[int]) -> Slot:
    w = 1.0 / np.arange(1, len(options) + 1)
    return Slot(p, np.asarray(options), np.cumsum(w / w.sum()))


def _medication_codes(num_rx: int) -> tuple[list[str], set[str]]:
    """The ATC universe: every code the conditions and the ward routines name, then ``atc_codes`` in order,
    up to ``num_rx``; and the named ("common") codes."""
    T = world_tables()
    named = set(T.ward_routine) | {c for unit in T.unit_routine.values() for c in unit}
    for spec in T.conditions:
        for slot in spec.get("slots", []):
            named.update(slot.split()[1:])
        named.update(spec.get("blocks", "").split())
    unknown = sorted(named - set(T.atc_codes))
    if unknown:
        raise ValueError(f"ATC codes {unknown} are missing from atc_codes in {WORLD_FILE}")
    if num_rx < len(named):
        raise ValueError(f"num_rx={num_rx} is smaller than the {len(named)} ATC codes the conditions name")
    return sorted(named | set([c for c in T.atc_codes if c not in named][: num_rx - len(named)])), named


@dataclass
class _CodeBook:
    """The diagnosis codes in order of creation, with the approximate MIMIC-III rate of the hand-written ones."""

    codes: list[str] = field(default_factory=list)
    weight: list[float] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def id(self, code: str, weight: float = 0.0) -> int:
        if code not in self.index:
            self.index[code] = len(self.codes)
            self.codes.append(code)
            self.weight.append(weight)
        return self.index[code]


def _hand_conditions(book: _CodeBook, rx_index: dict[str, int]) -> list[Condition]:
    T = world_tables()
    return [
        Condition(
            name=spec["name"], chronic=spec["kind"] == "chronic", cluster=spec.get("cluster", "acute"),
            primary=[book.id(c, w) for c, w in _parse_codes(spec["primary"])],
            extra=[book.id(c, w) for c, w in _parse_codes(spec.get("extra", ""))],
            slots=[_slot(float(s.split()[0]), [rx_index[c] for c in s.split()[1:]]) for s in spec.get("slots", [])],
            blocks=[rx_index[c] for c in spec.get("blocks", "").split()],
            raised_by=spec.get("raised_by", {}),
            units=_unit_votes(spec.get("units", {})),
        )
        for spec in T.conditions
    ]


def _add_siblings(conditions: list[Condition], book: _CodeBook, num: int, rng: np.random.Generator) -> None:
    """Rare siblings of the primary codes (same category, so same drugs) of the conditions that drive drugs,
    ``num`` in all, shared out in proportion to the square root of each condition's code count."""
    taken = set(book.codes)
    hand = [c for c in conditions if c.slots]
    size = np.array([len(c.primary) + len(c.extra) for c in hand], dtype=float)
    share = np.sqrt(size) / np.sqrt(size).sum()
    for cond, k in zip(hand, rng.multinomial(num, share)):
        # (legacy codes outside the tree, such as HIV's 0439, get no siblings)
        categories = sorted({icd9_category(book.codes[i]) for i in cond.primary if icd9_path(book.codes[i])[1]})
        for cat, m in zip(categories, rng.multinomial(k, np.full(len(categories), 1 / len(categories)))):
            cond.primary += [book.id(c) for c in _siblings(cat, m, taken, rng)]


def _minor_conditions(
    book: _CodeBook, num_dx: int, rx_codes: list[str], common: set[int], rng: np.random.Generator,
) -> list[Condition]:
    """Procedural conditions in categories no hand-written condition uses, until the book holds ``num_dx`` codes:
    each a cluster of 2-7 codes in one category (a third of them also in a neighbouring category of its section),
    with 0-2 slots among the common drugs of one ATC level-2 group that suits the chapter."""
    taken = set(book.codes)
    used = {icd9_category(c) for c in book.codes}
    pool = [(cat, sec) for cat, sec in _categories() if cat not in used]
    # draw categories chapter-weighted as in MIMIC-III: circulatory, injury and V codes are common
    weights = np.array([3.0 if cat[0].isdigit() and "390" <= cat <= "459" else 2.0 if cat[0] == "V" or
                        (cat[0].isdigit() and cat >= "800") else 0.6 if cat[0] == "E" else 1.0 for cat, _ in pool])
    order = rng.choice(len(pool), size=len(pool), replace=False, p=weights / weights.sum())
    by_section: dict[str, list[str]] = {}
    for cat, sec in pool:
        by_section.setdefault(sec, []).append(cat)
    rx_groups: dict[str, list[int]] = {}
    for i, c in enumerate(rx_codes):
        rx_groups.setdefault(c[:3], []).append(i)
    minor: list[Condition] = []
    for j in order:
        if len(book.codes) >= num_dx:
            break
        cat, sec = pool[j]
        if cat in used:
            continue
        cats = [cat]
        neighbours = [c for c in by_section[sec] if c not in used and c != cat]
        if neighbours and rng.random() < 0.3:
            cats.append(neighbours[rng.integers(len(neighbours))])
        used.update(cats)
        codes: list[str] = []
        for c in cats:
            codes += _siblings(c, int(rng.integers(2, 8)), taken, rng)
        codes = codes[: num_dx - len(book.codes)]
        if not codes:
            continue
        n_primary = max(1, round(len(codes) * rng.uniform(0.3, 0.7)))
        ids = [book.id(c) for c in codes]
        groups = [g for g in _chapter_groups(cat) if any(d in common for d in rx_groups.get(g, []))]
        slots = []
        for _ in range(rng.choice(3, p=[0.3, 0.5, 0.2]) if groups else 0):
            members = [d for d in rx_groups[groups[rng.integers(len(groups))]] if d in common]
            options = rng.permutation(members)[: rng.integers(1, 4)]
            slots.append(_slot(float(rng.uniform(0.15, 0.5)), options.tolist()))
        minor.append(Condition(
            f"minor {cat}", bool(rng.random() < 0.4), "other", ids[:n_primary], ids[n_primary:], slots,
            units=_unit_votes(_chapter_units(cat)),
        ))
    if len(book.codes) < num_dx:
        raise ValueError(f"only {len(book.codes)} diagnosis codes could be drawn; lower num_dx={num_dx}")
    return minor


def _ranked_rates(book: _CodeBook, n_hand: int, minor: list[Condition], rng: np.random.Generator) -> np.ndarray:
    """Each code's share of all diagnosis occurrences: hand-written codes take the top ranks in the order of their
    listed rate, procedural codes the rest in random order (a minor condition's first primary code its best)."""
    rank = np.empty(len(book.codes), dtype=int)
    rank[np.argsort(-np.asarray(book.weight[:n_hand]), kind="stable")] = np.arange(n_hand)
    rank[n_hand:] = n_hand + rng.permutation(len(book.codes) - n_hand)
    for cond in minor:
        ids = cond.primary + cond.extra
        i0 = int(np.argmin(rank[ids]))
        rank[[ids[0], ids[i0]]] = rank[[ids[i0], ids[0]]]
    return dx_rate_curve(len(book.codes))[rank]


def build_world(
    rng: np.random.Generator,
    num_dx: int = 1958,
    num_rx: int = 145,
    num_variants: int = 520,
    rare_mass: tuple[float, float] = (8e-5, 2.5e-4),
) -> World:
    """The code universe, the conditions and the ward routines: everything a cohort is drawn from.

    Args:
        rng: the world's random generator.
        num_dx: diagnosis codes in all (hand-written, their ``num_variants`` rare siblings, minor conditions).
        num_rx: medication codes in all.
        num_variants: rare siblings of the hand-written primary codes.
        rare_mass: share of all diagnoses that the primary codes of a specialty drug's host condition take. Every
            drug no hand-written condition names treats one such rare minor condition, as in MIMIC-III, where the
            45 least used ATC groups share 0.4 % of all prescriptions (the default is about 15-50 visits of a
            paper-scale cohort).
    """
    T = world_tables()
    rx_codes, named = _medication_codes(num_rx)
    rx_index = {c: i for i, c in enumerate(rx_codes)}
    common = {rx_index[c] for c in named}
    book = _CodeBook()
    conditions = _hand_conditions(book, rx_index)
    n_hand = len(book.codes)
    _add_siblings(conditions, book, num_variants, rng)
    minor = _minor_conditions(book, num_dx, rx_codes, common, rng)
    dx_rate = _ranked_rates(book, n_hand, minor, rng)
    rare = [m for m in minor if rare_mass[0] <= dx_rate[m.primary].sum() <= rare_mass[1]]
    for d in sorted(set(range(len(rx_codes))) - common):
        fits = [m for m in rare if rx_codes[d][:3] in _chapter_groups(icd9_category(book.codes[m.primary[0]]))]
        host = (fits or rare)[rng.integers(len(fits or rare))]
        host.slots.append(_slot(float(rng.uniform(0.6, 1.0)), [d]))
    routine = np.zeros((len(T.unit_prior), len(rx_codes)))  # (U, Vr)
    for u, unit in enumerate(T.unit_prior):
        for c, r in {**T.ward_routine, **T.unit_routine[unit]}.items():
            routine[u, rx_index[c]] = r
    prior = np.log(np.array(list(T.unit_prior.values())))
    return World(book.codes, rx_codes, conditions + minor, routine, prior, dx_rate)

