"""Hierarchical k-means visual words (multibert.video.quantize)."""

from __future__ import annotations

import pytest
import torch

from multibert.video.quantize import HierarchicalKMeans, kmeans, read_codebook_metadata


def separable(k: int = 3, depth: int = 2, dim: int = 6, per_leaf: int = 20, seed: int = 0) -> torch.Tensor:
    """Points around k^depth leaf centres built as a tree: each level's spread is 20× smaller than the last."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(1, dim)
    for level in range(depth):
        offsets = torch.randn(centres.size(0), k, dim, generator=g) * 100 / 20**level
        centres = (centres[:, None] + offsets).reshape(-1, dim)  # (k^(l+1), D)
    noise = torch.randn(centres.size(0), per_leaf, dim, generator=g) * 100 / 20**depth
    return (centres[:, None] + noise).reshape(-1, dim)  # (k^d · per_leaf, D)


def test_tree_walk_equals_brute_force_nearest_leaf_on_separable_data():
    x = separable(k=3, depth=3, dim=5)
    tree = HierarchicalKMeans(depth=3, branching=3).fit(x, seed=1)
    words = tree.assign(x)
    assert torch.equal(words, tree.assign_flat(x))
    # every true leaf cluster lands in exactly one word, and all 27 words are used
    assert torch.equal(torch.bincount(words, minlength=27), torch.full((27,), 20))
    assert words.reshape(27, 20).unique(dim=1).size(1) == 1


def test_tree_walk_is_never_closer_than_the_flat_search():
    # documented difference: the walk can miss the globally nearest leaf on unstructured data
    x = torch.randn(3000, 16)
    tree = HierarchicalKMeans(depth=2, branching=6).fit(x, seed=0)
    walk, flat = tree.assign(x), tree.assign_flat(x)
    brute = torch.cdist(x.double(), tree.leaves.double()).argmin(1)  # the reference: nearest of all leaves
    assert torch.equal(flat, brute)
    # the walk: at each level the nearest of the chosen node's k children (children of node i are i·k .. i·k+k-1)
    first = torch.cdist(x, tree.centroids[0].reshape(-1, x.size(1))).argmin(1)
    second = torch.stack([
        first[i] * 6 + torch.cdist(x[i : i + 1], tree.centroids[1].reshape(6, 6, -1)[first[i]]).argmin() for i in range(len(x))
    ])
    assert torch.equal(walk, second)
    d_walk = (x - tree.leaves[walk]).pow(2).sum(1)
    d_flat = (x - tree.leaves[flat]).pow(2).sum(1)
    assert (d_walk > d_flat + 1e-3).any()  # the walk does miss the nearest leaf for some points
    agree = (walk == flat).float().mean()
    assert 0.5 < agree < 1.0  # measured 0.82 here: a real, bounded approximation


def test_word_ids_are_paths_in_base_k():
    x = separable(k=2, depth=2, dim=3)
    tree = HierarchicalKMeans(depth=2, branching=2).fit(x)
    words = tree.assign(x)
    top = tree._nearest_child(x, torch.zeros(len(x), dtype=torch.long), 0)
    assert torch.equal(words // 2, top)


def test_codebook_save_load_round_trip(tmp_path):
    x = torch.randn(500, 7)
    tree = HierarchicalKMeans(depth=2, branching=4).fit(x)
    path = tree.save(tmp_path / "book.safetensors", {"note": "test"})
    again = HierarchicalKMeans.load(path)
    assert (again.depth, again.branching, again.num_words, again.feature_size) == (2, 4, 16, 7)
    for a, b in zip(tree.centroids, again.centroids):
        assert torch.equal(a, b)
    assert torch.equal(tree.assign(x), again.assign(x))
    assert torch.equal(tree.leaf_counts, again.leaf_counts)
    assert read_codebook_metadata(path)["depth"] == "2"


def test_not_a_codebook_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a multibert codebook"):
        HierarchicalKMeans.load(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError, match="tokenize-video"):
        HierarchicalKMeans.load(tmp_path / "missing.safetensors")


def test_nodes_with_fewer_points_than_k():
    # 5 points, k=4, d=2: level-1 nodes hold 1-2 points each; their spare children are unreachable copies
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    tree = HierarchicalKMeans(depth=2, branching=4).fit(x)
    words = tree.assign(x)
    assert words.unique().numel() == 5  # every point its own word
    assert int(tree.leaf_counts.sum()) == 5 and int((tree.leaf_counts > 0).sum()) == 5
    assert torch.equal(tree.leaves[words], x)  # single points are their own centroid


def test_identical_points():
    x = torch.ones(50, 3)
    tree = HierarchicalKMeans(depth=2, branching=3).fit(x)
    assert tree.assign(x).unique().numel() == 1
    assert torch.isfinite(torch.cat([c.flatten() for c in tree.centroids])).all()


def test_kmeans_recovers_blobs():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = (centres[:, None] + 0.1 * torch.randn(3, 30, 2, generator=g)).reshape(-1, 2)
    c = kmeans(x, 3, 20, g)
    found = torch.cdist(centres, c).min(1).values
    assert (found < 0.1).all()


def test_bad_input_errors():
    with pytest.raises(ValueError, match="depth >= 1"):
        HierarchicalKMeans(depth=0)
    tree = HierarchicalKMeans(2, 2)
    with pytest.raises(RuntimeError, match="not fitted"):
        tree.assign(torch.zeros(1, 2))
    tree.fit(torch.randn(20, 3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        tree.assign(torch.zeros(4, 5))


def test_fit_reports_progress_as_log_lines_without_a_terminal(caplog):
    """Not a TTY (pytest captures stderr): the node fits and the assignment end in a log line each."""
    import logging

    x = separable(k=3, depth=2, dim=4)
    with caplog.at_level(logging.INFO, logger="multibert.core.progress"):
        tree = HierarchicalKMeans(depth=2, branching=3).fit(x, progress=True, device="cpu")
        tree.assign(x, progress=True, chunk_size=50)
    assert "k-means d=2 k=3 on 180 points: 4 nodes of 4 nodes (100%)" in caplog.text  # 1 + 3 node fits
    assert "assigning visual words: 180 rows of 180 rows (100%)" in caplog.text


def test_assignment_in_chunks_equals_one_batch():
    x = torch.randn(1000, 8)
    tree = HierarchicalKMeans(depth=2, branching=5).fit(x, device="cpu")
    assert torch.equal(tree.assign(x, chunk_size=77), tree.assign(x, chunk_size=10_000))
    assert tree.assign(x.double(), device="auto").dtype == torch.long  # "auto": CUDA when present, else the CPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_and_assign_on_cuda_match_the_cpu():
    x = separable(k=3, depth=3, dim=5)
    cpu = HierarchicalKMeans(depth=3, branching=3).fit(x, seed=1, device="cpu")
    gpu = HierarchicalKMeans(depth=3, branching=3).fit(x, seed=1, device="cuda")
    assert torch.equal(cpu.assign(x), gpu.assign(x, device="cuda"))
