"""LightningModules: an adapter + the backbone + objectives, with optimisation and metrics.

Name them in YAML by full path, e.g. ``multibert.tasks.pretraining.PretrainingTask``.
"""
