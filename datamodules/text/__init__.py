"""Text pretraining data (BERT's MLM + NSP): corpora in BERT's format or JSONL, tokenized once into a
memory-mapped cache (:mod:`~datamodules.text.corpus`), and the datamodule (:mod:`~datamodules.text.datamodule`)."""
