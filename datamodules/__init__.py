"""LightningDataModules that turn each modality's raw data into typed batches (:mod:`datamodules.batch`)."""
