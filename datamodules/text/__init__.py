"""Text pretraining data (BERT's MLM + NSP), one room per concern:

- :mod:`~datamodules.text.corpus`: finding corpus files, reading BERT's format or JSONL safely (named errors, capped
  sentences, byte-range shards), the memory-mapped token cache, ``multibert vocab``;
- :mod:`~datamodules.text.examples`: the chunk plan, pair truncation, MLM + NSP examples, collation (both paths);
- :mod:`~datamodules.text.base`: the datamodules' shared arguments and their lazily built vocabulary;
- :mod:`~datamodules.text.datamodule`: one machine, from the memory-mapped cache;
- :mod:`~datamodules.text.prepare`: ``multibert text-prep``, tokenizing once into litdata's format for many nodes;
- :mod:`~datamodules.text.streaming`: streaming what ``text-prep`` wrote;
- :mod:`~datamodules.text.progress`: progress bars, or log lines when output is not a terminal.
"""
