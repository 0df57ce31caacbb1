"""G-BERT model pieces: ontology adapter vs a hand-written GAT, set invariance, the no-leak guarantee, metrics."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score
from torch_geometric.nn import GATConv

from datamodules.ehr.datamodule import RecommendCollator, _visit_tokens
from multibert.core.config import BertConfig
from multibert.gbert.adapter import OntologyAdapter, OntologyEmbedding
from multibert.gbert.heads import history_features
from multibert.gbert.metrics import average_precision, ddi_pair_counts, f1, jaccard
from multibert.gbert.ontology import OntologyTree
from multibert.gbert.task import GBertRecommendTask

DX = ["25001", "25002", "4019", "042", "V4581"]
RX = ["N02B", "N02A", "A10B", "C07A"]


def tiny_config(**kw) -> BertConfig:
    return BertConfig(hidden_size=12, num_hidden_layers=2, num_attention_heads=2, intermediate_size=17,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def dense_gat(conv, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """GAT (Veličković et al.) written out densely: self-loops, LeakyReLU(0.2) scores, softmax per receiver."""
    N, heads = x.size(0), conv.heads
    h = conv.lin(x).view(N, heads, -1)  # (N, h, c)
    a_src = (h * conv.att_src).sum(-1)  # (N, h)
    a_dst = (h * conv.att_dst).sum(-1)  # (N, h)
    adj = torch.eye(N, dtype=torch.bool)
    adj[edges[1], edges[0]] = True  # adj[receiver, sender]
    scores = F.leaky_relu(a_dst.T[:, :, None] + a_src.T[:, None, :], 0.2)  # (h, N_recv, N_send)
    alpha = scores.masked_fill(~adj, float("-inf")).softmax(-1)  # (h, N, N)
    out = torch.einsum("hij,jhc->ihc", alpha, h)  # (N, h, c)
    return out.reshape(N, -1) + conv.bias


@pytest.mark.parametrize("share", [True, False])
def test_ontology_embedding_equals_dense_gat(share: bool) -> None:
    tree = OntologyTree.build(DX, "icd9")
    emb = OntologyEmbedding(tree, hidden_size=8, heads=2, share_stages=share).eval()
    expected = dense_gat(emb.stage2, dense_gat(emb.stage1, emb.nodes, tree.stage1_edge_index()), tree.stage2_edge_index())
    torch.testing.assert_close(emb(), expected[: len(DX)], rtol=1e-5, atol=1e-6)
    assert (emb.stage1 is emb.stage2) == share
    # and equal to torch_geometric's GATConv run directly over the two edge lists
    conv1, conv2 = GATConv(8, 4, heads=2), GATConv(8, 4, heads=2)
    conv1.load_state_dict(emb.stage1.state_dict())
    conv2.load_state_dict(emb.stage2.state_dict())
    direct = conv2(conv1(emb.nodes, tree.stage1_edge_index()), tree.stage2_edge_index())
    torch.testing.assert_close(emb(), direct[: len(DX)])


def test_stage_one_reads_children_and_stage_two_reads_ancestors() -> None:
    tree = OntologyTree.build(["25001", "4019"], "icd9")
    emb = OntologyEmbedding(tree, hidden_size=4, heads=1).eval()
    with torch.no_grad():
        base = emb()[0].clone()
        emb.nodes[tree.index("401")] += 1.0  # a node of the other branch: no path to 25001
        torch.testing.assert_close(emb()[0], base)
        emb.nodes[tree.index("250")] += 1.0  # 25001's parent
        assert not torch.allclose(emb()[0], base)


def test_graph_is_encoded_once_per_forward() -> None:
    adapter = OntologyAdapter(tiny_config(), DX, RX)
    calls = []
    adapter.dx.register_forward_hook(lambda *a: calls.append("dx"))
    adapter.rx.register_forward_hook(lambda *a: calls.append("rx"))
    batch = _visit_tokens([np.array([3, 4, 5])] * 7, [np.array([8, 9])] * 7)  # 14 sequences
    out = adapter(batch)
    assert out.embeddings.shape == (14, 4, 12)
    assert calls == ["dx", "rx"]


@pytest.mark.parametrize("use_graph", [True, False])
def test_visit_vector_is_permutation_invariant(use_graph: bool) -> None:
    task = GBertRecommendTask(tiny_config(), functools.partial(OntologyAdapter, dx_codes=DX, rx_codes=RX, use_graph=use_graph)).eval()
    codes = np.array([3, 5, 6, 7])
    perm = codes[[2, 0, 3, 1]]
    batch = _visit_tokens([codes, perm, codes[:3]], [np.array([8, 10]), np.array([10, 8]), np.array([9])])
    dx, rx = task.visit_vectors(batch)
    torch.testing.assert_close(dx[0], dx[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rx[0], rx[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(dx[0], dx[2], atol=1e-4)  # a different set gives a different vector


def _patients(rng: np.random.Generator, n: int) -> list:
    def visit(h):
        return (h, 3 + rng.choice(len(DX), size=rng.integers(1, 4), replace=False),
                3 + len(DX) + rng.choice(len(RX), size=rng.integers(1, 4), replace=False))
    return [(s, [visit(100 * s + t) for t in range(int(rng.integers(2, 5)))]) for s in range(n)]


def test_no_leakage_of_current_or_future_visits() -> None:
    # a wide init makes logits O(1), so the tolerances below separate "unchanged" from "changed" clearly
    task = GBertRecommendTask(tiny_config(initializer_range=0.5), functools.partial(OntologyAdapter, dx_codes=DX, rx_codes=RX)).eval()
    collate = RecommendCollator(len(DX), len(RX))
    rng = np.random.default_rng(0)
    patients = _patients(rng, 5)
    with torch.no_grad():
        batch = collate(patients)
        base = task(batch)  # (Nt, Vr)
        row = 0
        for p, (subject, visits) in enumerate(patients):
            for t in range(1, len(visits)):
                changed = [(s, list(v)) for s, v in patients]
                # change visit t's medications and every later visit entirely
                new_visits = list(visits[:t]) + [(visits[t][0], visits[t][1], 3 + len(DX) + np.array([0, 1, 2, 3]))]
                new_visits += [(h, 3 + np.array([0, 1, 2, 3, 4]), 3 + len(DX) + np.array([3])) for h, _, _ in visits[t + 1:]]
                changed[p] = (subject, new_visits)
                out = task(collate(changed))
                torch.testing.assert_close(out[row], base[row], rtol=1e-5, atol=1e-6)
                # but the past does matter: change visit t-1's medications
                past = list(visits)
                past[t - 1] = (visits[t - 1][0], visits[t - 1][1], 3 + len(DX) + np.array([0, 1, 2, 3]))
                changed[p] = (subject, past)
                if not np.array_equal(np.sort(visits[t - 1][2]), 3 + len(DX) + np.arange(4)):
                    assert (task(collate(changed))[row] - base[row]).abs().max() > 1e-3
                row += 1
        assert row == len(base)
        # batched equals one patient at a time
        single = torch.cat([task(collate([pt])) for pt in patients])
        torch.testing.assert_close(single, base, rtol=1e-5, atol=1e-5)


def test_history_features_by_hand() -> None:
    dx = torch.arange(10.0).view(5, 2)
    rx = -dx
    first = torch.tensor([0, 0, 0, 3, 3])
    target = torch.tensor([1, 2, 4])
    out = history_features(dx, rx, first, target)
    torch.testing.assert_close(out[1], torch.tensor([1.0, 2.0, -1.0, -2.0, 4.0, 5.0]))  # mean of visits 0, 1
    torch.testing.assert_close(out[2], torch.tensor([6.0, 7.0, -6.0, -7.0, 8.0, 9.0]))  # patient 2: visit 3 only
    with pytest.raises(ValueError, match="earlier visit"):
        history_features(dx, rx, first, torch.tensor([3]))


def test_metrics_by_hand() -> None:
    target = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]])
    scores = torch.tensor([[0.9, 0.2, 0.4, 0.1], [0.1, 0.2, 0.05, 0.0], [0.35, 0.8, 0.6, 0.31]])
    pred = scores >= 0.3
    # row 0: pred {0, 2}, true {0, 1}: J = 1/3, P = R = 1/2, F1 = 1/2
    # row 1: pred {}, true {0}: J = 0, P = 0 (nothing predicted), F1 = 0
    # row 2: pred {0, 1, 2, 3}, true {1, 2}: J = 2/4, P = 1/2, R = 1, F1 = 2/3
    torch.testing.assert_close(jaccard(pred, target), torch.tensor([1 / 3, 0.0, 0.5]))
    torch.testing.assert_close(f1(pred, target), torch.tensor([0.5, 0.0, 2 / 3]))
    # AP row 0: ranks 0 (hit), 2, 1 (hit at 3rd) → (1 + 2/3) / 2
    torch.testing.assert_close(average_precision(scores, target)[0], torch.tensor((1 + 2 / 3) / 2))
    # DDI: row 2 predicts 4 drugs = 6 pairs, row 0 one pair (0, 2); interactions (0, 2) and (1, 3)
    ddi = torch.zeros(4, 4)
    ddi[0, 2] = ddi[2, 0] = ddi[1, 3] = ddi[3, 1] = 1
    interacting, pairs = ddi_pair_counts(pred, ddi)
    assert (interacting.item(), pairs.item()) == (3.0, 7.0)


def test_average_precision_matches_sklearn_with_ties() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(40, 30, generator=g)
    scores[:15] = torch.randint(0, 5, (15, 30), generator=g) / 5  # many ties
    target = torch.rand(40, 30, generator=g) < 0.25
    target[:, 0] = True
    ours = average_precision(scores, target)
    ref = [average_precision_score(target[i].numpy(), scores[i].numpy()) for i in range(40)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-5, atol=1e-6)


def test_checkpoint_reloads_weights_only_with_adapter_options(tmp_path) -> None:
    import lightning

    spec = {"class_path": "multibert.gbert.adapter.OntologyAdapter",
            "init_args": {"dx_codes": DX, "rx_codes": RX, "use_graph": False}}
    task = GBertRecommendTask(tiny_config(), adapter=spec).eval()
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": lightning.__version__}, path)
    again = GBertRecommendTask.load_from_checkpoint(path, weights_only=True).eval()
    assert type(again.encoder.adapter.dx).__name__ == "PlainEmbedding"  # the no-graph option survives
    assert again.rx_codes == RX
    batch = RecommendCollator(len(DX), len(RX))(_patients(np.random.default_rng(1), 3))
    with torch.no_grad():
        torch.testing.assert_close(again(batch), task(batch))
