"""The core layer: what every family shares (see :mod:`multibert` for the layers).

- :mod:`~multibert.core.config`: ``BertConfig`` (Hugging Face field names, presets);
- :mod:`~multibert.core.backbone`: the post-LN BERT encoder stack (no embeddings);
- :mod:`~multibert.core.adapter`: the adapter contract (the seam a new modality plugs into);
- :mod:`~multibert.core.text_adapter`: BERT's WordPiece embeddings, the default adapter;
- :mod:`~multibert.core.encoder`: adapter → backbone → pooler;
- :mod:`~multibert.core.heads`, :mod:`~multibert.core.losses`, :mod:`~multibert.core.objectives`: heads own
  parameters, losses are pure functions, an objective joins a head, a loss and the batch fields it reads;
- :mod:`~multibert.core.batch`: the token batch and the ignore index, the contract with the data layer;
- :mod:`~multibert.core.convert`: Hugging Face checkpoints in and out through one key table;
- :mod:`~multibert.core.optim`: BERT's optimiser (AdamW, no decay on biases / LayerNorm) and linear warmup / decay;
- :mod:`~multibert.core.checkpoint`: weights-only loading and rebuilding a task from its checkpoint;
- :mod:`~multibert.core.task`: the LightningModule base every task extends;
- :mod:`~multibert.core.pretraining`: masked-LM + pair pretraining for any token adapter (BERT, VideoBERT).
"""
