"""``multibert gbert-map``: a 2-D picture of G-BERT's learned code embeddings (as the paper's t-SNE figure,
Shang et al., 2019, arXiv 1906.00346), diagnoses coloured by ICD-9 chapter and medications by ATC main group."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from multibert.core.task import EncoderTask
from multibert.gbert.task import GBertPretrainTask

log = logging.getLogger(__name__)


def project_2d(x: torch.Tensor, method: Literal["pca", "tsne"] = "pca", seed: int = 0) -> np.ndarray:
    """(V, H) vectors → (V, 2): principal components, or t-SNE (needs scikit-learn).

    Shapes:
        x: (V, H) → (V, 2).
    """
    x = x.double() - x.double().mean(0)
    if method == "pca":
        _, _, v = torch.linalg.svd(x, full_matrices=False)  # v: (H, H) rows are components
        return (x @ v[:2].T).numpy()  # (V, 2)
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE
        except ImportError as err:
            raise ValueError("method='tsne' needs scikit-learn (pip install scikit-learn); or use method='pca'") from err
        return TSNE(n_components=2, random_state=seed, init="pca", perplexity=min(30.0, max(2.0, len(x) / 4 - 1))).fit_transform(x.numpy())
    raise ValueError(f"method={method!r}: choose 'pca' or 'tsne'")


def plot_code_map(*, checkpoint: str, out: str = "gbert_codes.png", method: Literal["pca", "tsne"] = "pca") -> None:
    """Draw the diagnosis and medication code embeddings of a G-BERT checkpoint as a PNG.

    Args:
        checkpoint: a ``.ckpt`` of ``GBertPretrainTask`` or ``GBertRecommendTask`` written by ``multibert fit``.
        out: the PNG to write.
        method: ``pca`` or ``tsne``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = EncoderTask.from_checkpoint(checkpoint)
    if not isinstance(task, GBertPretrainTask):
        raise ValueError(f"{checkpoint} holds a {type(task).__name__}, not a G-BERT task")
    adapter = task.encoder.adapter
    dx, rx = task.code_embeddings()
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    for ax, vectors, tree, title in ((axes[0], dx, adapter.dx_tree, "diagnoses (ICD-9 chapters)"),
                                     (axes[1], rx, adapter.rx_tree, "medications (ATC main groups)")):
        xy = project_2d(vectors, method)
        chapters = np.array(tree.chapters())
        names = sorted(set(chapters))
        cmap = plt.get_cmap("tab20", max(len(names), 1))
        for i, name in enumerate(names):
            sel = chapters == name
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(i), label=name, alpha=0.8)
        ax.set_title(f"{title}, {method.upper()}")
        ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    graph = "ontology GAT" if hasattr(adapter.dx, "stage1") else "no graph"
    fig.suptitle(f"G-BERT code embeddings ({graph}) — {Path(checkpoint).name}")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}: {len(dx)} diagnosis and {len(rx)} medication codes")
