"""Fine-tuning data: labelled text (:mod:`~datamodules.finetune.labels`), SQuAD (:mod:`~datamodules.finetune.squad`)
and CoNLL tags (:mod:`~datamodules.finetune.conll`), sharing :mod:`~datamodules.finetune.base`. The model side is
:mod:`multibert.finetune`."""
