"""The commands layer: ``multibert NAME`` commands that join a model with data or with the file system
(export, zero-shot evaluation, augmentation, SQuAD scoring, code maps). Each is a plain typed function listed in
:data:`multibert.cli.PREP_COMMANDS`; nothing below this layer imports it.
"""
