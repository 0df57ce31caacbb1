"""ICD-9 / ATC trees from code strings (multibert.gbert.ontology)."""

from __future__ import annotations

import logging

import pytest
import torch

from multibert.gbert.ontology import OntologyTree, atc_chapter, icd9_chapter, normalize_atc, normalize_icd9


def test_icd9_tree_nodes_edges_and_ancestors() -> None:
    codes = ["250.01", "25002", "4019", "042", "V45.81", "E880.9"]
    tree = OntologyTree.build(codes, "icd9")
    assert tree.codes == ["25001", "25002", "4019", "042", "V4581", "E8809"]
    # 6 codes + categories 250, 401, V45, E880 + sections 249-259, 401-405, 042-042, V40-V49, E880-E888 + root
    assert tree.num_nodes == 6 + 4 + 5 + 1
    assert tree.ancestors("250.01") == ["250", "249-259", "icd9_root"]
    assert tree.ancestors("042") == ["042-042", "icd9_root"]  # a 3-digit code is its own category
    assert tree.ancestors("V4581") == ["V45", "V40-V49", "icd9_root"]
    assert tree.ancestors("E8809") == ["E880", "E880-E888", "icd9_root"]  # E-codes: 4-character categories
    e1, e2 = tree.stage1_edge_index(), tree.stage2_edge_index()
    assert e1.shape == (2, tree.num_nodes - 1)  # a tree: one parent edge per non-root node
    assert e2.shape == (2, 3 + 3 + 3 + 2 + 3 + 3)  # one edge per (code, ancestor)
    root = tree.index("icd9_root")
    assert set(e1[1].tolist()) >= {root} and root not in e1[0].tolist()
    # stage 2 sends ancestors to codes only
    assert set(e2[1].tolist()) == set(range(6))
    assert (tree.index("249-259"), 0) in set(zip(*e2.tolist()))


def test_atc_tree_levels() -> None:
    tree = OntologyTree.build(["N02B", "N02BE", "A10BA02"], "atc")
    assert tree.ancestors("N02BE") == ["N02B", "N02", "N", "atc_root"]
    assert tree.ancestors("N02B") == ["N02", "N", "atc_root"]
    assert tree.ancestors("A10BA02") == ["A10BA", "A10B", "A10", "A", "atc_root"]
    # nodes: 3 codes + N02, N, A10BA, A10B, A10, A + root (N02B is a code and N02BE's parent at once)
    assert tree.num_nodes == 3 + 6 + 1
    assert tree.stage2_edge_index().shape[1] == 3 + 4 + 5


def test_normalisation_spellings() -> None:
    assert normalize_icd9(" 250.01 ") == normalize_icd9("25001") == "25001"
    assert normalize_icd9("v45.81") == "V4581"
    assert normalize_icd9("41.0") == "0410"
    assert normalize_atc("n02be01") == "N02BE01"
    assert icd9_chapter("4019") == "circulatory" and icd9_chapter("V4581").startswith("V")
    assert atc_chapter("N02B") == "N nervous system"


@pytest.mark.parametrize("code", ["25X01", "12", "V1", "E12", "", "250.0.1", "Q123"])
def test_malformed_icd9_codes_are_refused(code: str) -> None:
    with pytest.raises(ValueError, match="malformed ICD-9 code"):
        normalize_icd9(code)


@pytest.mark.parametrize("code", ["N2B", "N02B1", "1N02", "N02BEX", ""])
def test_malformed_atc_codes_are_refused(code: str) -> None:
    with pytest.raises(ValueError, match="malformed ATC code"):
        normalize_atc(code)


def test_unknown_codes_hang_from_deepest_known_ancestor(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        tree = OntologyTree.build(["0430", "4019", "043"], "icd9")  # 043 lies in no ICD-9-CM section
    assert tree.num_unplaced == 2
    assert tree.ancestors("0430") == ["043", "icd9_root"]
    assert tree.ancestors("043") == ["icd9_root"]
    assert "2 of 3 icd9 codes are unknown" in caplog.text
    atc = OntologyTree.build(["X01A", "N02B"], "atc")
    assert atc.num_unplaced == 1 and atc.ancestors("X01A") == ["X01", "atc_root"]


def test_duplicates_after_normalisation_are_refused() -> None:
    with pytest.raises(ValueError, match="occurs twice"):
        OntologyTree.build(["250.01", "25001"], "icd9")


def test_edge_index_dtype() -> None:
    tree = OntologyTree.build(["N02B"], "atc")
    assert tree.stage1_edge_index().dtype == torch.long
