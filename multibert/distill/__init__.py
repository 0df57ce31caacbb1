"""Distillation of any multibert model: DistilBERT (Sanh et al., 2019) and TinyBERT (Jiao et al., 2020).

- :mod:`~multibert.distill.losses`: the loss terms, pure functions;
- :mod:`~multibert.distill.layers`: which teacher layer teaches which student layer (TinyBERT's map and
  projections) and DistilBERT's initialisation from teacher layers;
- :mod:`~multibert.distill.teacher`: building and loading the frozen teacher (Hugging Face directory, multibert
  checkpoint, or a config);
- :mod:`~multibert.distill.task`: the LightningModule that combines them.
"""
