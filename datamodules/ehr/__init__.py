"""G-BERT data: admission tables and MIMIC-III preparation (:mod:`~datamodules.ehr.tables`), the SYNTHETIC cohort
(:mod:`~datamodules.ehr.synthetic`) and the datamodule (:mod:`~datamodules.ehr.datamodule`). The model side is
:mod:`multibert.gbert`."""
