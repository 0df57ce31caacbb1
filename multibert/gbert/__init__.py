"""G-BERT (Shang et al., 2019, "Pre-training of Graph Augmented Transformers for Medication Recommendation",
arXiv 1906.00346): everything on the model side, in one folder. The data side is :mod:`datamodules.ehr`.

- :mod:`~multibert.gbert.ontology`: the ICD-9 and ATC trees, built from the code strings alone;
- :mod:`~multibert.gbert.adapter`: code embeddings through a graph attention network over the trees;
- :mod:`~multibert.gbert.batch`: the pretraining and recommendation batches (the contract with the data);
- :mod:`~multibert.gbert.heads`: the four pretraining heads and the medication-recommendation head;
- :mod:`~multibert.gbert.losses`, :mod:`~multibert.gbert.metrics`: pure functions;
- :mod:`~multibert.gbert.ddi`: drug-drug-interaction files and the DDI-rate metric;
- :mod:`~multibert.gbert.task`: the pretraining and recommendation LightningModules;
- :mod:`~multibert.gbert.writer`: per-visit recommendations written by ``multibert predict``.
"""
