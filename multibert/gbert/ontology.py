"""Medical-code ontologies for G-BERT (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for
Medication Recommendation", arXiv 1906.00346), built from the code strings alone.

- ICD-9-CM diagnoses: code → 3-character category (E-codes: 4 characters) → section range (the standard ICD-9-CM
  sections, e.g. ``001-009``, ``390-392``, ``401-405``, ``V01-V09``, ``E800-E807``) → root.
- ATC medications: code → its prefixes of 5, 4, 3 and 1 characters that are shorter than itself → root
  (a 7-character substance code also gets its 5-character parent).

Codes with or without dots normalise to one form (``250.01`` → ``25001``, ``V45.81`` → ``V4581``); malformed codes
raise ``ValueError`` naming the code. A well-formed code whose top level the tree does not know (an ICD-9 category in
no section, say ``043``; an ATC code whose first letter is no anatomical main group) is attached to its deepest known
ancestor instead of inventing a node, and :attr:`OntologyTree.num_unplaced` counts such codes.

The edge lists follow ``torch_geometric``'s ``source → target`` convention (row 0 sends, row 1 receives):
stage 1 sends each child to its parent, stage 2 sends every ancestor of a vocabulary code to that code. The
authors' tree builder (jshang123/G-Bert, ``build_tree.py``) uses the same two stages; its section list has a few
overlapping ranges (``V01-V91`` next to ``V01-V09``), which this module does not repeat: each category belongs to
exactly one section.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import torch

log = logging.getLogger(__name__)

#: The standard ICD-9-CM sections (the level between a 3-character category and a chapter).
ICD9_SECTIONS: tuple[str, ...] = (
    # 001-139 infectious and parasitic diseases
    "001-009", "010-018", "020-027", "030-041", "042", "045-049", "050-059", "060-066", "070-079", "080-088",
    "090-099", "100-104", "110-118", "120-129", "130-136", "137-139",
    # 140-239 neoplasms
    "140-149", "150-159", "160-165", "170-176", "179-189", "190-199", "200-208", "209", "210-229", "230-234",
    "235-238", "239",
    # 240-279 endocrine, nutritional, metabolic, immunity
    "240-246", "249-259", "260-269", "270-279",
    # 280-289 blood
    "280-289",
    # 290-319 mental disorders
    "290-294", "295-299", "300-316", "317-319",
    # 320-389 nervous system and sense organs
    "320-327", "330-337", "338", "339", "340-349", "350-359", "360-379", "380-389",
    # 390-459 circulatory system
    "390-392", "393-398", "401-405", "410-414", "415-417", "420-429", "430-438", "440-449", "451-459",
    # 460-519 respiratory system
    "460-466", "470-478", "480-488", "490-496", "500-508", "510-519",
    # 520-579 digestive system
    "520-529", "530-539", "540-543", "550-553", "555-558", "560-569", "570-579",
    # 580-629 genitourinary system
    "580-589", "590-599", "600-608", "610-612", "614-616", "617-629",
    # 630-679 pregnancy, childbirth, puerperium
    "630-639", "640-649", "650-659", "660-669", "670-677", "678-679",
    # 680-709 skin
    "680-686", "690-698", "700-709",
    # 710-739 musculoskeletal system
    "710-719", "720-724", "725-729", "730-739",
    # 740-779 congenital anomalies, perinatal conditions
    "740-759", "760-763", "764-779",
    # 780-799 symptoms, signs, ill-defined conditions
    "780-789", "790-796", "797-799",
    # 800-999 injury and poisoning
    "800-804", "805-809", "810-819", "820-829", "830-839", "840-848", "850-854", "860-869", "870-879",
    "880-887", "890-897", "900-904", "905-909", "910-919", "920-924", "925-929", "930-939", "940-949",
    "950-957", "958-959", "960-979", "980-989", "990-995", "996-999",
    # V01-V91 supplementary classification: factors influencing health status
    "V01-V09", "V10-V19", "V20-V29", "V30-V39", "V40-V49", "V50-V59", "V60-V69", "V70-V82", "V83-V84", "V85",
    "V86", "V87", "V88", "V89", "V90", "V91",
    # E000-E999 supplementary classification: external causes of injury
    "E000", "E001-E030", "E800-E807", "E810-E819", "E820-E825", "E826-E829", "E830-E838", "E840-E845",
    "E846-E849", "E850-E858", "E860-E869", "E870-E876", "E878-E879", "E880-E888", "E890-E899", "E900-E909",
    "E910-E915", "E916-E928", "E929", "E930-E949", "E950-E959", "E960-E969", "E970-E978", "E980-E989",
    "E990-E999",
)

#: ICD-9-CM chapters (for colouring pictures), as (first category, last category, name).
ICD9_CHAPTERS: tuple[tuple[str, str, str], ...] = (
    ("001", "139", "infectious"), ("140", "239", "neoplasms"), ("240", "279", "endocrine"),
    ("280", "289", "blood"), ("290", "319", "mental"), ("320", "389", "nervous"), ("390", "459", "circulatory"),
    ("460", "519", "respiratory"), ("520", "579", "digestive"), ("580", "629", "genitourinary"),
    ("630", "679", "pregnancy"), ("680", "709", "skin"), ("710", "739", "musculoskeletal"),
    ("740", "759", "congenital"), ("760", "779", "perinatal"), ("780", "799", "symptoms"),
    ("800", "999", "injury"), ("V01", "V91", "V: health factors"), ("E000", "E999", "E: external causes"),
)

#: ATC anatomical main groups (level 1).
ATC_GROUPS: dict[str, str] = {
    "A": "alimentary tract and metabolism", "B": "blood", "C": "cardiovascular", "D": "dermatologicals",
    "G": "genito-urinary and sex hormones", "H": "systemic hormones", "J": "anti-infectives",
    "L": "antineoplastic and immunomodulating", "M": "musculo-skeletal", "N": "nervous system",
    "P": "antiparasitic", "R": "respiratory", "S": "sensory organs", "V": "various",
}

_ICD9_NUMERIC = re.compile(r"^\d{3,5}$")
_ICD9_V = re.compile(r"^V\d{2,4}$")
_ICD9_E = re.compile(r"^E\d{3,4}$")
_ATC = re.compile(r"^[A-Z](\d{2}([A-Z]([A-Z](\d{2})?)?)?)?$")
_ATC_LEVELS = (1, 3, 4, 5, 7)


def normalize_icd9(code: str) -> str:
    """One spelling for an ICD-9-CM diagnosis code: upper case, no dot, no spaces.

    ``"250.01"``, ``"25001"`` → ``"25001"``; ``"v45.81"`` → ``"V4581"``; ``"E880.9"`` → ``"E8809"``; a dotted numeric
    code with fewer than 3 digits before the dot is zero-padded (``"41.0"`` → ``"0410"``).

    Raises:
        ValueError: the string is no ICD-9-CM diagnosis code.
    """
    raw = code
    if not isinstance(code, str):
        raise ValueError(f"ICD-9 code {raw!r} is not a string")
    code = code.strip().upper().replace(" ", "")
    if "." in code:
        head, _, tail = code.partition(".")
        if head.isdigit() and len(head) < 3:
            head = head.zfill(3)
        code = head + tail
    if _ICD9_NUMERIC.match(code) or _ICD9_V.match(code) or _ICD9_E.match(code):
        return code
    raise ValueError(
        f"malformed ICD-9 code {raw!r}: expected 3-5 digits, V + 2-4 digits or E + 3-4 digits (dots allowed)"
    )


def normalize_atc(code: str) -> str:
    """One spelling for an ATC code: upper case, no spaces or dots; a level-1, 3, 4, 5 or 7-character code.

    Raises:
        ValueError: the string is no ATC code.
    """
    raw = code
    if not isinstance(code, str):
        raise ValueError(f"ATC code {raw!r} is not a string")
    code = code.strip().upper().replace(" ", "").replace(".", "")
    if len(code) in _ATC_LEVELS and _ATC.match(code):
        return code
    raise ValueError(
        f"malformed ATC code {raw!r}: expected a letter, 2 digits, 2 letters and 2 digits (any prefix of "
        "1, 3, 4, 5 or 7 characters, e.g. N, N02, N02B, N02BE, N02BE01)"
    )


def _expand_sections(sections: Iterable[str]) -> dict[str, str]:
    """Category → section name, for every category a section range covers."""
    out: dict[str, str] = {}
    for section in sections:
        first, _, last = section.partition("-")
        last = last or first
        prefix = first[0] if first[0] in "VE" else ""
        width = len(first) - len(prefix)
        lo, hi = int(first[len(prefix):]), int(last[len(prefix):])
        # a one-category section is named "042-042": its node must not collide with the code "042" itself
        name = f"{first}-{last}"
        for number in range(lo, hi + 1):
            out[f"{prefix}{number:0{width}d}"] = name
    return out


_ICD9_SECTION_OF = _expand_sections(ICD9_SECTIONS)


def icd9_category(code: str) -> str:
    """The 3-character category of a normalised ICD-9 code (4 characters for E-codes)."""
    return code[:4] if code.startswith("E") else code[:3]


def icd9_chapter(code: str) -> str:
    """The chapter name of an ICD-9 code (``"unknown"`` outside every chapter)."""
    category = icd9_category(normalize_icd9(code))
    for first, last, name in ICD9_CHAPTERS:
        if first[0] == category[0] or (first[0].isdigit() and category[0].isdigit()):
            if len(first) == len(category) and first <= category <= last:
                return name
    return "unknown"


def atc_chapter(code: str) -> str:
    """The anatomical main group of an ATC code, e.g. ``"N nervous system"``."""
    group = normalize_atc(code)[0]
    return f"{group} {ATC_GROUPS[group]}" if group in ATC_GROUPS else "unknown"


def icd9_path(code: str) -> tuple[list[str], bool]:
    """Ancestors of a normalised ICD-9 code from the nearest up, without the root; and whether the tree knows it."""
    category = icd9_category(code)
    section = _ICD9_SECTION_OF.get(category)
    path = [category] if category != code else []
    if section is None:
        return path, False
    return path + [section], True


def atc_path(code: str) -> tuple[list[str], bool]:
    """Ancestors of a normalised ATC code from the nearest up, without the root; and whether the tree knows it."""
    path = [code[:n] for n in reversed(_ATC_LEVELS) if n < len(code)]
    if code[0] not in ATC_GROUPS:
        return path[:-1] if len(code) > 1 else [], False  # the 1-letter group is not a known node
    return path, True


@dataclass
class OntologyTree:
    """A code tree: nodes (vocabulary codes first, in vocabulary order, then the internal nodes).

    Attributes:
        kind: ``"icd9"`` or ``"atc"``.
        codes: the normalised vocabulary codes (nodes ``0 .. len(codes) - 1``).
        nodes: all node names.
        parent: the parent node of each node, ``-1`` for the root.
        num_unplaced: vocabulary codes whose top level the tree does not know (attached to their deepest known
            ancestor).
    """

    kind: Literal["icd9", "atc"]
    codes: list[str]
    nodes: list[str]
    parent: list[int]
    num_unplaced: int = 0
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, codes: Sequence[str], kind: Literal["icd9", "atc"]) -> "OntologyTree":
        """Build the tree over a code vocabulary.

        Args:
            codes: vocabulary codes, dotted or not; duplicates after normalisation are an error.
            kind: ``"icd9"`` for diagnoses, ``"atc"`` for medications.

        Raises:
            ValueError: a malformed code, a duplicate, or an unknown ``kind``.
        """
        if kind not in ("icd9", "atc"):
            raise ValueError(f"unknown ontology kind {kind!r}; choose 'icd9' or 'atc'")
        normalize, path_of = (normalize_icd9, icd9_path) if kind == "icd9" else (normalize_atc, atc_path)
        norm = [normalize(c) for c in codes]
        if len(set(norm)) != len(norm):
            seen: set[str] = set()
            dup = next(c for c in norm if c in seen or seen.add(c))
            raise ValueError(f"code {dup!r} occurs twice in the {kind} vocabulary (after normalisation)")
        root = f"{kind}_root"
        index = {c: i for i, c in enumerate(norm)}
        nodes, parent = list(norm), [-1] * len(norm)
        unplaced = []
        for code in norm:
            chain, known = path_of(code)
            if not known:
                unplaced.append(code)
            child = index[code]
            for name in chain + [root]:
                node = index.get(name)
                if node is None:
                    node = index[name] = len(nodes)
                    nodes.append(name)
                    parent.append(-1)
                if parent[child] == -1:
                    parent[child] = node
                child = node
        parent[index[root]] = -1
        if unplaced:
            log.warning(
                "%d of %d %s codes are unknown to the tree and hang from their deepest known ancestor, e.g. %s",
                len(unplaced), len(norm), kind, unplaced[:5],
            )
        return cls(kind, norm, nodes, parent, len(unplaced), index)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def root(self) -> int:
        return self._index[f"{self.kind}_root"]

    def index(self, name: str) -> int:
        """The node id of a node name (vocabulary codes may be given in any spelling)."""
        if name in self._index:
            return self._index[name]
        normalize = normalize_icd9 if self.kind == "icd9" else normalize_atc
        key = normalize(name)
        if key not in self._index:
            raise KeyError(f"{name!r} is not a node of this {self.kind} tree")
        return self._index[key]

    def ancestors(self, code: str) -> list[str]:
        """Names of the ancestors of a node, nearest first, the root last."""
        out, node = [], self.parent[self.index(code)]
        while node != -1:
            out.append(self.nodes[node])
            node = self.parent[node]
        return out

    def stage1_edge_index(self) -> torch.Tensor:
        """Child → parent edges (every node aggregates its direct children in GAT stage 1).

        Shapes:
            (2, E) with row 0 the sending child and row 1 the receiving parent.
        """
        child = [i for i, p in enumerate(self.parent) if p != -1]
        return torch.tensor([child, [self.parent[i] for i in child]], dtype=torch.long)  # (2, E)

    def stage2_edge_index(self) -> torch.Tensor:
        """Ancestor → vocabulary code edges (every code aggregates all its ancestors in GAT stage 2).

        Shapes:
            (2, E) with row 0 the sending ancestor and row 1 the receiving code.
        """
        src, dst = [], []
        for code in range(len(self.codes)):
            node = self.parent[code]
            while node != -1:
                src.append(node)
                dst.append(code)
                node = self.parent[node]
        return torch.tensor([src, dst], dtype=torch.long)  # (2, E)

    def chapters(self) -> list[str]:
        """A colouring label for each vocabulary code: the ICD-9 chapter or the ATC main group."""
        chapter = icd9_chapter if self.kind == "icd9" else atc_chapter
        return [chapter(c) for c in self.codes]
