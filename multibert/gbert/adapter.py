"""G-BERT's ontology embedding (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for Medication
Recommendation", arXiv 1906.00346, section 3.2), as an input adapter for the shared backbone.

Every node of the ICD-9 and ATC trees (:mod:`multibert.gbert.ontology`) has a learned vector. Two graph-attention passes
(``torch_geometric.nn.GATConv``, Veličković et al., 2018) turn them into code embeddings:

- stage 1: every node attends over its direct children and itself (child → parent edges, self-loops added);
- stage 2: every vocabulary code attends over itself and all its ancestors (ancestor → code edges).

The whole table ``[special tokens; diagnosis codes; medication codes]`` is computed **once per forward** (once per
training step) and then gathered for every visit, never per sequence. A visit is ``[CLS]`` + its codes with **no
position embedding** — a visit is a set, so permuting its codes must not change its vector; a type embedding tells
diagnosis sequences (0) from medication sequences (1).

Paper sizes: hidden 300, GAT with 4 heads × 75 concatenated. Following the authors' code (jshang123/G-Bert,
``graph_models.py``) one GAT layer serves both stages by default (``share_stages``) and no non-linearity sits between
them. Deviation: LayerNorm and dropout follow the embedding sum in both the graph and the no-graph variant (the
authors normalise only without the graph), so the ablation changes the graph alone. ``use_graph=False`` is the
paper's "G-BERT_G-" ablation: plain code embeddings.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch_geometric.nn import GATConv

from multibert.core.adapter import Adapter, AdapterOutput
from multibert.core.backbone import init_bert_weights
from multibert.core.config import BertConfig
from multibert.gbert.batch import NUM_SPECIAL
from multibert.gbert.ontology import OntologyTree


class OntologyEmbedding(nn.Module):
    """Code embeddings of one tree: node vectors → GAT stage 1 → GAT stage 2 → the vocabulary codes' rows.

    Args:
        tree: the code tree; its first ``len(tree.codes)`` nodes are the vocabulary codes.
        hidden_size: H, the size of node and code vectors.
        heads: GAT heads; ``hidden_size`` must be divisible by it (outputs are concatenated).
        share_stages: one GAT layer for both stages (the authors' code) instead of two.
        dropout: dropout on the attention coefficients.

    Shapes:
        output: (V, H) with V = ``len(tree.codes)``.
    """

    def __init__(self, tree: OntologyTree, hidden_size: int, heads: int = 4, share_stages: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % heads:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by graph_heads={heads}")
        self.num_codes = len(tree.codes)
        self.nodes = nn.Parameter(torch.empty(tree.num_nodes, hidden_size))
        self.stage1 = GATConv(hidden_size, hidden_size // heads, heads=heads, dropout=dropout)
        self.stage2 = self.stage1 if share_stages else GATConv(hidden_size, hidden_size // heads, heads=heads, dropout=dropout)
        self.register_buffer("edges1", tree.stage1_edge_index(), persistent=False)  # (2, E1)
        self.register_buffer("edges2", tree.stage2_edge_index(), persistent=False)  # (2, E2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.nodes)  # glorot, as the authors
        self.stage1.reset_parameters()
        self.stage2.reset_parameters()

    def forward(self) -> torch.Tensor:
        x = self.stage1(self.nodes, self.edges1)  # (N, H): every node over its children
        x = self.stage2(x, self.edges2)  # (N, H): every code over its ancestors
        return x[: self.num_codes]  # (V, H)


class PlainEmbedding(nn.Module):
    """The no-graph ablation: one learned vector per code.

    Shapes:
        output: (V, H).
    """

    def __init__(self, tree: OntologyTree, hidden_size: int, std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(len(tree.codes), hidden_size))
        self.std = std
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.std)

    def forward(self) -> torch.Tensor:
        return self.weight


class OntologyAdapter(Adapter):
    """Visits of medical codes → backbone inputs, with code vectors from the ICD-9 / ATC ontologies.

    Reads ``batch.input_ids`` (joint ids: 0 ``[PAD]``, 1 ``[CLS]``, 2 ``[MASK]``, then ``dx_codes``, then
    ``rx_codes``), ``batch.attention_mask`` and ``batch.token_type_ids`` (0 diagnoses, 1 medications).

    Args:
        config: uses ``hidden_size``, ``layer_norm_eps``, ``hidden_dropout_prob``, ``initializer_range``.
        dx_codes: diagnosis vocabulary (ICD-9), in id order; the EHR datamodule links it.
        rx_codes: medication vocabulary (ATC), in id order; the EHR datamodule links it.
        use_graph: code vectors from the ontology GAT (True) or plain embeddings (the "no graph" ablation).
        graph_heads: GAT heads (the paper: 4, each of size hidden / 4 = 75).
        share_stages: one GAT layer for both stages, as the authors' code.
        graph_dropout: dropout on GAT attention coefficients.
    """

    def __init__(
        self,
        config: BertConfig,
        dx_codes: Sequence[str] | None = None,
        rx_codes: Sequence[str] | None = None,
        use_graph: bool = True,
        graph_heads: int = 4,
        share_stages: bool = True,
        graph_dropout: float = 0.0,
    ) -> None:
        super().__init__(config)
        if not dx_codes or not rx_codes:
            raise ValueError(
                "OntologyAdapter needs non-empty dx_codes and rx_codes (adapter.init_args); the EHR datamodule "
                "(datamodules.ehr.datamodule.EHRDataModule) links them"
            )
        self.dx_codes, self.rx_codes = list(dx_codes), list(rx_codes)
        self.dx_tree = OntologyTree.build(dx_codes, "icd9")
        self.rx_tree = OntologyTree.build(rx_codes, "atc")
        H = config.hidden_size
        if use_graph:
            self.dx = OntologyEmbedding(self.dx_tree, H, graph_heads, share_stages, graph_dropout)
            self.rx = OntologyEmbedding(self.rx_tree, H, graph_heads, share_stages, graph_dropout)
        else:
            self.dx = PlainEmbedding(self.dx_tree, H, config.initializer_range)
            self.rx = PlainEmbedding(self.rx_tree, H, config.initializer_range)
        self.graph_dropout = graph_dropout if use_graph else 0.0
        self._cache: dict[str, tuple[tuple, torch.Tensor]] = {}  # see _codes
        self.special = nn.Parameter(torch.empty(NUM_SPECIAL, H))
        self.token_type_embeddings = nn.Embedding(2, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.reset_parameters()

    def check_compatible(self, other: Adapter, source: str) -> None:
        """Both adapters must read the same code ids: equal diagnosis and medication vocabularies, in order."""
        for name in ("dx_codes", "rx_codes"):
            ours, theirs = getattr(self, name), getattr(other, name, None)
            if theirs != ours:
                raise ValueError(
                    f"{source} has {'no' if theirs is None else len(theirs)} {name}, this model {len(ours)} (or another "
                    "order): both read the same code ids; use the same admission table, max_codes and synthetic settings"
                )

    @property
    def num_dx(self) -> int:
        return len(self.dx_tree.codes)

    @property
    def num_rx(self) -> int:
        return len(self.rx_tree.codes)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.special, std=self.config.initializer_range)
        init_bert_weights(self.token_type_embeddings, self.config.initializer_range)
        init_bert_weights(self.LayerNorm, self.config.initializer_range)

    def code_table(self) -> torch.Tensor:
        """All input vectors, computed once: ``[special; diagnosis codes; medication codes]``.

        Shapes:
            output: (3 + Vd + Vr, H).
        """
        return torch.cat([self.special, self._codes("dx"), self._codes("rx")], dim=0)  # (3 + Vd + Vr, H)

    def _codes(self, name: str) -> torch.Tensor:
        """One tree's code vectors. When nothing in them is trained (frozen parameters, or no gradient wanted) and
        nothing is random (no graph dropout in training), they are the same at every step: computed once and kept
        until a parameter changes (in place, or replaced)."""
        module = getattr(self, name)
        parameters = list(module.parameters())
        trained = torch.is_grad_enabled() and any(p.requires_grad for p in parameters)
        if trained or (self.training and self.graph_dropout > 0):
            return module()
        key = tuple((id(p), p._version) for p in parameters)
        cached = self._cache.get(name)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                cached = self._cache[name] = (key, module())
        return cached[1]

    def forward(self, batch: Any) -> AdapterOutput:
        """Shapes:
        batch.input_ids, batch.token_type_ids: (S, T) → embeddings (S, T, H), attention_mask (S, T).
        """
        table = self.code_table()  # (3 + Vd + Vr, H): the graph runs once for the whole batch
        x = table[batch.input_ids] + self.token_type_embeddings(batch.token_type_ids)  # (S, T, H); no positions
        return AdapterOutput(self.dropout(self.LayerNorm(x)), batch.attention_mask, batch.token_type_ids)

