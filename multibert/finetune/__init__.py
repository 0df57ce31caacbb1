"""Fine-tuning (Devlin et al., 2019, §4): sequence classification (docBERT, patentBERT), extractive question
answering (SQuAD) and token classification (NER). The data side is :mod:`datamodules.finetune`.

- :mod:`~multibert.finetune.batch`: the classification, QA and token-tagging batches;
- :mod:`~multibert.finetune.heads`: the span head and window pooling;
- :mod:`~multibert.finetune.losses`, :mod:`~multibert.finetune.metrics`: pure functions;
- :mod:`~multibert.finetune.task`: what the three tasks share (epoch metrics, prediction files);
- :mod:`~multibert.finetune.classification`, :mod:`~multibert.finetune.qa`, :mod:`~multibert.finetune.tokens`.
"""
