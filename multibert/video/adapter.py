"""VideoBERT's input: WordPiece text and visual words in one vocabulary (Sun et al., ICCV 2019, arXiv 1904.01766).

The text vocabulary (V_text rows, e.g. BERT's 30,522) is extended by the ``[>]`` separator and the K visual words
of a hierarchical k-means codebook (:mod:`multibert.video.quantize`)::

    ids 0 .. V_text-1       WordPiece tokens (unchanged: a text checkpoint's rows load as they are)
    id  V_text              [>]   (separates text from video: [CLS] text [>] video [SEP])
    ids V_text+1 .. V-1     visual words 0 .. K-1          V = V_text + 1 + K = config.vocab_size

The embedding keeps Hugging Face's ``BertEmbeddings`` layout (it subclasses :class:`TextAdapter`), so masked-LM
over text and visual words ties to one table. Visual-word rows (``visual_init``):

- ``centroids`` — the paper's: each row *is* its word's S3D leaf centroid (D = H: S3D's 1024-d features and
  BERT-large's hidden size), and the rows stay frozen (``freeze_visual_words``, by default for these rows only);
- ``projected`` — for D ≠ H (BERT-base, the light demo features): the centroids centred, projected onto their top
  H principal directions (zero-padded if H exceeds their rank) and scaled to the text rows' standard deviation, so
  that nearby centroids start as nearby embeddings (our extension; the paper only ran D = H);
- ``random`` — BERT's initialisation, like a new text token;
- ``auto`` (default) — ``centroids`` where D = H, else ``projected``.

Frozen rows receive no gradient (a hook zeroes it, so Adam's moments stay 0) and are restored from their stored
copy at every forward (decoupled weight decay would otherwise shrink them); the text rows train as usual.

The codebook tree is kept as buffers, so a checkpoint carries the tokenizer that made its words
(:meth:`VideoAdapter.codebook`). :meth:`VideoAdapter.extend_pretrained` grows a text checkpoint's word embedding and
MLM bias to the extended vocabulary (the task calls it when loading ``init_from``).
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from safetensors.torch import load_file

from multibert.core.config import BertConfig
from multibert.core.text_adapter import TextAdapter
from multibert.video.quantize import HierarchicalKMeans, read_codebook_metadata

log = logging.getLogger(__name__)

_WORD_KEY = "encoder.adapter.word_embeddings.weight"
_BIAS_KEY = "mlm.head.bias"


def codebook_size(path: str) -> int:
    """K of a saved codebook, read from its header."""
    meta = read_codebook_metadata(path)
    return int(meta["branching"]) ** int(meta["depth"])


def centroid_rows(leaves: torch.Tensor, hidden_size: int, std: float) -> torch.Tensor:
    """Embedding rows from centroids: centre, PCA-project to ``hidden_size`` (zero-pad beyond the rank), set std.

    Shapes:
        leaves: (K, D) → (K, H).
    """
    x = leaves.double() - leaves.double().mean(0)  # (K, D)
    if x.size(1) != hidden_size:
        _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh: (r, D)
        r = min(hidden_size, vh.size(0))
        x = torch.cat([x @ vh[:r].T, x.new_zeros(x.size(0), hidden_size - r)], dim=1)  # (K, H)
    scale = x.std()
    rows = x / scale * std if scale > 0 else torch.randn_like(x) * std
    return rows.float()


VISUAL_INITS = ("auto", "centroids", "projected", "random")


class VideoAdapter(TextAdapter):
    """Text + ``[>]`` + visual-word embeddings (HF ``BertEmbeddings`` layout over the extended vocabulary).

    Reads ``batch.input_ids``, ``batch.attention_mask`` and ``batch.token_type_ids`` like :class:`TextAdapter`.

    Args:
        config: ``vocab_size`` must be V_text + 1 + K (the video datamodule links it).
        codebook: the codebook file that made the visual words (``<tokens_dir>/codebook.safetensors``); the video
            datamodule links it, so YAML need not repeat it.
        visual_init: ``auto``, ``centroids`` (the paper's; needs D = H), ``projected`` or ``random`` (see the module
            docstring).
        freeze_visual_words: keep the visual-word rows at their initial values; ``None`` (default): frozen when
            they are the raw centroids (the paper's setting), trained otherwise (projected or random rows are not
            the features they stand for, so fixing them helps nothing: on the synthetic demo it stopped the model
            from linking video to words).
        init_from_centroids: the earlier name of this choice, still read from earlier checkpoints and configs:
            ``True`` means ``visual_init='auto'``, ``False`` ``'random'``; the rows were always trained then
            (``freeze_visual_words`` defaults to ``False`` with it).
    """

    def __init__(
        self,
        config: BertConfig,
        codebook: str | None = None,
        visual_init: str = "auto",
        freeze_visual_words: bool | None = None,
        init_from_centroids: bool | None = None,
    ) -> None:
        if init_from_centroids is not None:
            visual_init = "auto" if init_from_centroids else "random"
            freeze_visual_words = False if freeze_visual_words is None else freeze_visual_words
            log.warning("VideoAdapter: init_from_centroids=%s is the earlier name of visual_init; read as "
                        "visual_init=%r with the visual-word rows trained", init_from_centroids, visual_init)
        if codebook is None:
            raise ValueError(
                "VideoAdapter needs the codebook file of the visual words (adapter.init_args.codebook); "
                "the video datamodule links it from data.tokens_dir"
            )
        meta = read_codebook_metadata(codebook)
        depth, branching = int(meta["depth"]), int(meta["branching"])
        K = branching**depth
        text = config.vocab_size - K - 1
        if text < 1:
            raise ValueError(
                f"config.vocab_size={config.vocab_size} cannot hold [>] and the {K} visual words of {codebook}; "
                "it must be V_text + 1 + K (link it from the video datamodule)"
            )
        super().__init__(config)
        self.text_vocab_size = text
        self.separator_id = text
        self.visual_offset = text + 1
        self.num_visual_words = K
        self.depth, self.branching = depth, branching
        tree = HierarchicalKMeans(depth, branching).load_state_dict(load_file(codebook))
        for level, c in enumerate(tree.centroids):
            self.register_buffer(f"codebook_level_{level}", c.clone())  # persistent: saved with the model
        if visual_init not in VISUAL_INITS:
            raise ValueError(f"visual_init={visual_init!r}; choose one of {VISUAL_INITS}")
        D, H = tree.feature_size, config.hidden_size
        if visual_init == "auto":
            visual_init = "centroids" if D == H else "projected"
        if visual_init == "centroids" and D != H:
            raise ValueError(
                f"visual_init='centroids' uses the {D}-d centroids of {codebook} as embedding rows, but hidden_size is "
                f"{H}; use visual_init='projected' (or 'auto') for D != H"
            )
        self.visual_init = visual_init
        if freeze_visual_words is None:
            freeze_visual_words = visual_init == "centroids"
        self.freeze_visual_words = freeze_visual_words
        if visual_init != "centroids" and freeze_visual_words:
            # the frozen rows' reference copy (with raw centroids, the codebook's leaves are that copy already)
            self.register_buffer("visual_rows", torch.zeros(K, H))
        self.init_visual_rows()
        if freeze_visual_words:
            self.word_embeddings.weight.register_hook(self._drop_visual_grad)

    def init_visual_rows(self, std: float | None = None) -> None:
        """Set the visual-word rows as ``visual_init`` says (``projected``: scaled to ``std``, the text rows' by
        default)."""
        weight = self.word_embeddings.weight
        if self.visual_init == "centroids":
            rows = self.codebook().leaves
        elif self.visual_init == "projected":
            std = float(weight[: self.text_vocab_size].detach().std()) if std is None else std
            rows = centroid_rows(self.codebook().leaves, self.config.hidden_size, std)
        else:
            std = self.config.initializer_range if std is None else std
            rows = torch.randn(self.num_visual_words, self.config.hidden_size) * std
        with torch.no_grad():
            weight[self.visual_offset :] = rows.to(weight)
            if hasattr(self, "visual_rows"):
                self.visual_rows.copy_(rows)

    def frozen_rows(self) -> torch.Tensor:
        """The values frozen visual-word rows are kept at. Shape: (K, H)."""
        if self.visual_init == "centroids":
            return getattr(self, f"codebook_level_{self.depth - 1}").reshape(self.num_visual_words, -1)  # (K, H)
        return self.visual_rows

    def _drop_visual_grad(self, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[self.visual_offset :] = 0
        return grad

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if self.freeze_visual_words:
            # weight decay moves every row of a parameter that has a gradient: put the frozen rows back first
            with torch.no_grad():
                self.word_embeddings.weight[self.visual_offset :] = self.frozen_rows()
        return super().embed(input_ids, token_type_ids)

    def codebook(self) -> HierarchicalKMeans:
        """The hierarchical k-means tree stored in this adapter."""
        tree = HierarchicalKMeans(self.depth, self.branching)
        tree.centroids = [getattr(self, f"codebook_level_{l}").float().cpu() for l in range(self.depth)]
        return tree

    def visual_token_ids(self, features: torch.Tensor) -> torch.Tensor:
        """Vocabulary ids of clip features, through the stored codebook. Shapes: (N, D) → (N,)."""
        return self.codebook().assign(features.cpu()) + self.visual_offset

    def extend_pretrained(
        self, theirs: BertConfig, state: dict[str, torch.Tensor]
    ) -> tuple[BertConfig, dict[str, torch.Tensor]]:
        """Grow a text checkpoint (already mapped to multibert keys) to this adapter's vocabulary.

        The checkpoint's V_text word rows are copied unchanged; ``[>]`` and the visual-word rows keep this
        adapter's initialisation (projected rows rescaled to the checkpoint's text-row std); the MLM output bias gets
        zeros for the new ids. A checkpoint that already has the full vocabulary is returned
        as it is.

        Returns:
            the checkpoint's config with ``vocab_size`` set to ours, and the extended state.
        """
        V = self.config.vocab_size
        if theirs.vocab_size == V:
            return theirs, state
        if theirs.vocab_size != self.text_vocab_size:
            raise ValueError(
                f"checkpoint vocabulary has {theirs.vocab_size} tokens but this video model's text part has "
                f"{self.text_vocab_size} (= vocab_size {V} - 1 [>] - {self.num_visual_words} visual words); "
                "tokenize text with the checkpoint's vocab.txt (data.vocab_file)"
            )
        state = dict(state)
        if _WORD_KEY in state:
            text_rows = state[_WORD_KEY]
            with torch.no_grad():
                self.word_embeddings.weight[: self.text_vocab_size] = text_rows.to(self.word_embeddings.weight)
                self.init_visual_rows(float(text_rows.float().std()))
            state[_WORD_KEY] = self.word_embeddings.weight.detach().clone()
        if _BIAS_KEY in state:
            bias = state[_BIAS_KEY]
            state[_BIAS_KEY] = torch.cat([bias, bias.new_zeros(V - bias.numel())])
        return dataclasses.replace(theirs, vocab_size=V), state
