"""What a user of the ``multibert`` command sees: multibert's log records on stderr from rank zero at a chosen
verbosity, no upstream warnings they cannot act on, and one line instead of a traceback for an error multibert
raises on purpose (bad file, field, code or config)."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path

from lightning.pytorch.utilities.rank_zero import rank_zero_only

#: Warnings from libraries that a user of the command cannot act on (pyproject's filterwarnings covers pytest only).
UPSTREAM_WARNINGS = (
    r"`torch\.jit\.script` is deprecated",  # torch_geometric's import
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree helpers
    r"'set_vital' is deprecated",  # torchdata's StatefulDataLoader
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes into its own folder again
    r"LightningCLI's args parameter is intended to run from within Python",  # main() passes the cleaned argv
    r"The dirpath has changed from",  # test / predict of a run's checkpoint log into a folder of their own
)
#: Lightning's info lines that are advertisements, not information about the run.
UPSTREAM_INFO = ("💡 Tip:", "Trainer already configured with model summary callbacks")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_TRUE = ("1", "true", "yes", "on")


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        """Ignored on purpose: logging.StreamHandler assigns its stream, but ours always follows sys.stderr."""


class _RankZero(logging.Filter):
    """Only the process of global rank 0 prints (Lightning sets the rank once the processes are known)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(rank_zero_only, "rank", 0) == 0


class _DropMessages(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


_HANDLER: logging.Handler | None = None


def configure_logging(verbosity: str = "info") -> None:
    """Show multibert's log records (``multibert.*``, ``datamodules.*``) on stderr from rank zero, at ``verbosity``
    (``debug``, ``info``, ``warning``, ``error``); above ``info`` Lightning's own info lines are quieted too.
    Idempotent: calling it again changes the level."""
    global _HANDLER
    level = LEVELS.get(verbosity.lower())
    if level is None:
        raise ValueError(f"--verbosity {verbosity!r}: choose one of {sorted(LEVELS)}")
    if _HANDLER is None:
        _HANDLER = _Stderr()
        _HANDLER.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        _HANDLER.addFilter(_RankZero())
        for name in ("multibert", "datamodules"):
            logging.getLogger(name).addHandler(_HANDLER)
        for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).addFilter(_DropMessages(UPSTREAM_INFO))
    for name in ("multibert", "datamodules"):
        logging.getLogger(name).setLevel(level)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(max(level, logging.INFO))


def quiet_upstream_warnings() -> None:
    for message in UPSTREAM_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def command_options(argv: list[str]) -> tuple[list[str], str, bool]:
    """Take ``--verbosity LEVEL`` and ``--debug`` out of ``argv`` (they apply to every command)."""
    verbosity = os.environ.get("MULTIBERT_VERBOSITY", "info")
    debug = os.environ.get("MULTIBERT_DEBUG", "").strip().lower() in _TRUE
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--debug":
            debug = True
        elif arg == "--verbosity" and i + 1 < len(argv):
            verbosity = argv[i + 1]
            i += 1
        elif arg.startswith("--verbosity="):
            verbosity = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return rest, verbosity, debug


#: Errors multibert raises on purpose (bad file, field, code, config) are of these kinds and raised in its code.
DELIBERATE = (ValueError, KeyError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
_OUR_CODE = tuple(str(Path(importlib.import_module(p).__file__).resolve().parent) + os.sep for p in ("multibert", "datamodules"))


def raised_by_us(error: BaseException) -> bool:
    if isinstance(error, KeyError) and " " not in str(error.args[0] if error.args else ""):
        return False  # a bare missing key is a bug, not a message
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(Path(tb.tb_frame.f_code.co_filename).resolve()).startswith(_OUR_CODE)
