"""Hierarchical k-means visual words (VideoBERT, Sun et al., ICCV 2019, arXiv 1904.01766, Sec. 4.2: depth
d = 4, branching k = 12, so 12⁴ = 20,736 visual words from the S3D clip features).

Fit: k-means with k-means++ seeding on all points, then, level by level, k-means with k clusters inside every node
on the points assigned to it, each node independently (Lloyd iterations in torch; an empty cluster is re-seeded
with the point farthest from its centroid). A node with fewer than k points keeps each of its points as one child
centroid and fills the remaining children with copies of its own centroid; those copies are never reached by the
tree walk (ties go to the lower index) and show up as unused words (:attr:`HierarchicalKMeans.leaf_counts` = 0).

Assign: walk the tree, choosing the nearest of k children at each level (d·k distances per point, not k^d).
The walk is an approximation of the nearest leaf: a point close to a boundary between two top-level cells can end
in a leaf that is not the globally nearest centroid. On well-separated data the two coincide (tested); on
unstructured data they differ for a share of points that :func:`HierarchicalKMeans.assign_flat` lets you
measure (``benchmarks/video.py`` reports it). Visual word ids are the leaf's path read as a base-k number.

Scale: the fit runs in torch on any device (``device="auto"``: CUDA when present, else the CPU), on a sample held
in memory (the paper's codebook: about 1M clips; :class:`~multibert.video.store.FeatureStore` draws it from the
per-video feature files without loading them all); assignment walks the tree in chunks of ``chunk_size`` rows on
the same device. Both show progress (:class:`~multibert.video.progress.Progress`): node fits (1,885 at d=4, k=12)
and rows assigned.

Deviation: the paper does not say how it fitted the tree. Like faiss's k-means, each node is fitted on at most
``points_per_centroid · k`` of its points (a random subset; 256 · 12 = 3,072 by default): on 60k × 1024 clip-like
features this matched faiss's distortion at faiss's speed (``benchmarks/video.py``); ``points_per_centroid=None``
fits every node on all its points (better by about 1 % there, twice as slow).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from multibert.core.progress import progress_bar

log = logging.getLogger(__name__)

FORMAT = "multibert.hierarchical_kmeans/1"


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances. Shapes: x (N, D), c (K, D) → (N, K)."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)).clamp_min_(0)  # (N, K)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / ``None``: CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def kmeans_pp_init(
    x: torch.Tensor, k: int, generator: torch.Generator, x_sq: torch.Tensor | None = None, trials: int | None = None
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii, 2007; the greedy variant scikit-learn uses): each new
    centroid is the best of ``trials`` (default ``2 + ln k``) points drawn with probability ∝ D², the one that
    lowers the potential most. Shapes: x (N, D) with N >= k, x_sq (N,) → (k, D).

    ``generator`` is a CPU generator (the draws are made on the CPU, so results do not depend on the device).
    """
    x_sq = x.pow(2).sum(1) if x_sq is None else x_sq
    trials = trials or 2 + int(math.log(k))
    first = int(torch.randint(x.size(0), (1,), generator=generator))
    centroids = [x[first]]
    d2 = (x_sq - 2 * x @ x[first] + x_sq[first]).clamp_min(0)  # (N,)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: take any point
            idx = int(torch.randint(x.size(0), (1,), generator=generator))
            centroids.append(x[idx])
            continue
        cand = torch.multinomial((d2 / total).double().cpu(), trials, replacement=True, generator=generator)
        cand = cand.to(x.device)
        c = x[cand]  # (t, D)
        dist = torch.addmm((x_sq[cand])[:, None] + x_sq[None, :], c, x.T, alpha=-2).clamp_min_(0)  # (t, N)
        new = torch.minimum(d2[None, :], dist)  # (t, N)
        best = int(new.sum(1).argmin())
        centroids.append(x[int(cand[best])])
        d2 = new[best]
    return torch.stack(centroids)  # (k, D)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator, tol: float = 1e-4) -> torch.Tensor:
    """Lloyd's k-means with greedy k-means++ seeding; stops after ``iters`` or once the inertia improves by less
    than ``tol`` (relative). Shapes: x (N, D) with N >= k → centroids (k, D)."""
    x_sq = x.pow(2).sum(1)  # (N,)
    c = kmeans_pp_init(x, k, generator, x_sq)
    prev = None
    for _ in range(iters):
        # ||x||² is the same for every centroid: leave it out of the argmin. (k, N) and a reduction over k: about
        # 4x faster on a CPU than (N, k) reduced over its short last dimension
        d = torch.addmm(c.pow(2).sum(1)[:, None], c, x.T, alpha=-2)  # (k, N)
        best, assign = d.min(0)  # (N,), (N,)
        onehot = torch.nn.functional.one_hot(assign, k).to(x.dtype)  # (N, k)
        counts = onehot.sum(0)  # (k,)
        sums = onehot.T @ x  # (k, D): a matmul, far faster than index_add_ on a CPU
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp_min(1)[:, None])
        err = (best + x_sq).clamp_min(0)  # (N,) squared distance to the assigned centroid
        if empty.any():  # re-seed an empty cluster with the worst-served points
            c[empty] = x[err.topk(int(empty.sum())).indices]
        inertia = float(err.sum())
        if prev is not None and abs(prev - inertia) <= tol * max(prev, 1e-12):
            break
        prev = inertia
    return c


class HierarchicalKMeans:
    """A k-ary tree of centroids of depth d; its k^d leaves are the visual words.

    Args:
        depth: d, levels of the tree.
        branching: k, children per node.

    Attributes:
        centroids: d tensors; level ``l`` is ``(k^l, k, D)``: the k child centroids of each node at depth ``l``.
        leaf_counts: (k^d,) training points per leaf after fitting (0 marks an unused word).
    """

    def __init__(self, depth: int = 4, branching: int = 12) -> None:
        if depth < 1 or branching < 2:
            raise ValueError(f"need depth >= 1 and branching >= 2, got depth={depth}, branching={branching}")
        self.depth = depth
        self.branching = branching
        self.centroids: list[torch.Tensor] = []
        self.leaf_counts: torch.Tensor | None = None

    @property
    def num_words(self) -> int:
        """K = k^d."""
        return self.branching**self.depth

    @property
    def feature_size(self) -> int:
        self._check_fitted()
        return self.centroids[0].size(-1)

    @property
    def leaves(self) -> torch.Tensor:
        """Leaf centroids in word-id order. Shape: (K, D)."""
        self._check_fitted()
        return self.centroids[-1].reshape(self.num_words, -1)  # (K, D)

    def _check_fitted(self) -> None:
        if not self.centroids:
            raise RuntimeError("the hierarchical k-means is not fitted; call fit() or load()")

    # ----------------------------------------------------------------- fitting
    def fit(
        self,
        x: torch.Tensor,
        iters: int = 20,
        seed: int = 0,
        points_per_centroid: int | None = 256,
        device: str | torch.device | None = "auto",
        progress: bool = False,
    ) -> HierarchicalKMeans:
        """Fit the tree on features.

        Args:
            x: features (the fitting sample; see :class:`~multibert.video.store.FeatureStore` for large sets).
            iters: Lloyd iterations per node (each stops early once the inertia settles).
            seed: random seed of the seeding and subsampling.
            points_per_centroid: fit each node on at most ``points_per_centroid · k`` of its points, a random
                subset (faiss's rule; ``None``: all).
            device: where the fit runs: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
            progress: show a progress bar over the node fits (log lines when stderr is not a terminal).

        Shapes:
            x: (N, D).
        """
        if x.ndim != 2 or x.size(0) == 0:
            raise ValueError(f"fit needs a non-empty (N, D) feature matrix, got shape {tuple(x.shape)}")
        dev = resolve_device(device)
        x = x.to(dev, torch.float32)
        g = torch.Generator().manual_seed(seed)
        k = self.branching
        max_points = None if points_per_centroid is None else points_per_centroid * k
        node = torch.zeros(x.size(0), dtype=torch.long, device=dev)  # (N,) node of each point at the current depth
        self.centroids = []
        thin = 0
        n_fits = sum(k**level for level in range(self.depth))
        with progress_bar(n_fits, f"k-means d={self.depth} k={k} on {x.size(0):,} points", unit="nodes", enabled=progress) as bar:
            for level in range(self.depth):
                n_nodes = k**level
                parents = self.centroids[-1].reshape(n_nodes, -1) if level else x.mean(0, keepdim=True)  # (k^l, D)
                level_c = parents[:, None, :].repeat(1, k, 1)  # (k^l, k, D) fallback: copies of the parent
                order = torch.argsort(node, stable=True)
                counts = torch.bincount(node, minlength=n_nodes).tolist()
                start = 0
                for j, n in enumerate(counts):
                    idx = order[start : start + n]
                    start += n
                    bar.update()
                    if n == 0:
                        continue
                    pts = x[idx]
                    if max_points is not None and n > max_points:
                        pts = pts[torch.randperm(n, generator=g)[:max_points].to(dev)]
                    if n <= k:
                        thin += 1
                        level_c[j, :n] = pts  # each point its own child; the rest stay parent copies
                    else:
                        level_c[j] = kmeans(pts, k, iters, g)
                self.centroids.append(level_c)
                node = node * k + self._nearest_child(x, node, level)
        self.centroids = [c.cpu() for c in self.centroids]
        self.leaf_counts = torch.bincount(node, minlength=self.num_words).cpu()
        log.info(
            "hierarchical k-means d=%d k=%d on %d points (%s): %d of %d words used, %d nodes had <= k points",
            self.depth, k, x.size(0), dev, int((self.leaf_counts > 0).sum()), self.num_words, thin,
        )
        return self

    def _nearest_child(self, x: torch.Tensor, node: torch.Tensor, level: int) -> torch.Tensor:
        """Index (0..k-1) of the nearest child of each point's node. Shapes: x (N, D), node (N,) → (N,).

        Points are grouped by node, so each group is one (n, D) × (D, k) matmul against its node's children;
        everything stays on ``x``'s device.
        """
        c = self.centroids[level].to(x.device)  # (k^l, k, D)
        c_sq = c.pow(2).sum(-1)  # (k^l, k)
        out = torch.empty(x.size(0), dtype=torch.long, device=x.device)
        order = torch.argsort(node, stable=True)
        nodes, counts = torch.unique_consecutive(node[order], return_counts=True)
        start = 0
        for j, n in zip(nodes.tolist(), counts.tolist()):
            idx = order[start : start + n]
            start += n
            # ||x||² is the same for all children; (k, n) reduced over k (faster than (n, k) over its last dim)
            out[idx] = torch.addmm(c_sq[j][:, None], c[j], x[idx].T, alpha=-2).argmin(0)
        return out

    # ----------------------------------------------------------------- assignment
    def assign(
        self,
        x: torch.Tensor,
        device: str | torch.device | None = None,
        chunk_size: int = 65_536,
        progress: bool = False,
    ) -> torch.Tensor:
        """Visual word of each feature by walking the tree, ``chunk_size`` rows at a time.

        Args:
            x: features.
            device: where the walk runs (``None``: ``x``'s device; ``"auto"``: CUDA when present).
            chunk_size: rows per batch (bounds the device memory).
            progress: show a progress bar over the rows.

        Shapes:
            x: (N, D) → (N,) int64 in [0, K), on the CPU.
        """
        self._check_fitted()
        if x.ndim != 2 or x.size(1) != self.feature_size:
            raise ValueError(f"expected features of shape (N, {self.feature_size}), got {tuple(x.shape)}")
        dev = x.device if device is None else resolve_device(device)
        out = torch.empty(x.size(0), dtype=torch.long)
        with progress_bar(x.size(0), "assigning visual words", unit="rows", enabled=progress) as bar:
            for s in range(0, x.size(0), chunk_size):
                chunk = x[s : s + chunk_size].to(dev, torch.float32)  # (n, D)
                node = torch.zeros(chunk.size(0), dtype=torch.long, device=dev)
                for level in range(self.depth):
                    node = node * self.branching + self._nearest_child(chunk, node, level)
                out[s : s + chunk.size(0)] = node.cpu()
                bar.update(chunk.size(0))
        return out

    def assign_flat(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Globally nearest leaf (brute force over all K leaves). Shapes: x (N, D) → (N,)."""
        leaves = self.leaves.float()
        return torch.cat([_sq_dist(x[s : s + chunk].float(), leaves).argmin(1) for s in range(0, x.size(0), chunk)])

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        state = {f"level_{l}": c.contiguous() for l, c in enumerate(self.centroids)}
        if self.leaf_counts is not None:
            state["leaf_counts"] = self.leaf_counts.contiguous()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> HierarchicalKMeans:
        """Fill the centroids from :meth:`state_dict`'s tensors, checking their shapes against d and k."""
        k = self.branching
        cents = []
        for level in range(self.depth):
            key = f"level_{level}"
            if key not in state:
                raise KeyError(f"codebook lacks {key!r} (depth={self.depth})")
            c = state[key]
            if c.ndim != 3 or c.shape[:2] != (k**level, k):
                raise ValueError(f"codebook {key} has shape {tuple(c.shape)}, expected ({k**level}, {k}, D)")
            cents.append(c.float())
        self.centroids = cents
        self.leaf_counts = state.get("leaf_counts")
        return self

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write the tree as safetensors (depth, branching and ``metadata`` in the header)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "depth": str(self.depth), "branching": str(self.branching)}
        meta["extra"] = json.dumps(metadata or {})
        save_file(self.state_dict(), str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HierarchicalKMeans:
        """Read a tree written by :meth:`save`."""
        meta = read_codebook_metadata(path)
        tree = cls(int(meta["depth"]), int(meta["branching"]))
        return tree.load_state_dict(load_file(str(path)))


def read_codebook_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors header of a saved codebook; raises if the file is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codebook file {path} does not exist; make one with `multibert tokenize-video`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a multibert codebook (header format={meta.get('format')!r}, expected {FORMAT!r})"
        )
    return meta
