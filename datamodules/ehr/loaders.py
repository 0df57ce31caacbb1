"""Resumable loaders for G-BERT's EHR data: a seeded, stateful order; the alternating round; the staged schedule.

Exact resume (issue 10): a checkpoint taken anywhere inside an epoch records where the data stands, and a resumed
run sees the batches the uninterrupted run would have seen. Training loaders are torchdata's
``StatefulDataLoader`` over the shared :class:`~datamodules.sampling.EpochSampler`, whose order is a pure function of ``(seed, epoch)``; the sampler
hands out ``(epoch, index)`` keys, so that whatever is random about an example (the masks of a pretraining visit) is
drawn from its key and not from a global generator. Each loader gets its own ``torch.Generator``: creating an
iterator then draws nothing from torch's global generator, which dropout uses and which the G-BERT task saves in its
checkpoints (:mod:`multibert.gbert.task`).

- :class:`RoundLoader`: one round of the alternating schedule (``data.alternate``) = full passes over several
  loaders in turn, as one Lightning epoch; its state is (round, pass, position in the pass).
- With ``data.stages`` the datamodule builds the loader of each epoch's stage instead
  (:class:`multibert.gbert.schedule.Stage`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules.sampling import EpochSampler


def stateful_loader(
    dataset: Dataset, batch_size: int, collate: Callable[[list[Any]], Any], shuffle: bool, seed: int,
    num_replicas: int = 1, rank: int = 0, num_workers: int = 0,
) -> StatefulDataLoader:
    """A ``StatefulDataLoader`` over an :class:`EpochSampler` of ``dataset``, with its own generator."""
    sampler = EpochSampler(dataset, batch_size, shuffle, seed, num_replicas, rank, fixed_epoch=None if shuffle else 0,
                           keys_with_epoch=True)
    return StatefulDataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(seed),
    )


class RoundLoader:
    """One round of G-BERT's alternating schedule: full passes over each loader in turn (pretraining visits, then
    recommendation patients), yielding both batch types; one round is one Lightning epoch.

    Pass ``i`` of round ``r`` shuffles with epoch ``r * len(loaders) + i``. Lightning tells the round through the
    hook it has for samplers: at every epoch it calls ``loader.sampler.set_epoch(epoch)``, and a round loader is its
    own ``sampler``. Stateful for Lightning (``state_dict`` / ``load_state_dict``, saved with the fit loop): the
    round, the pass and the position inside the pass, so a run resumed mid-round continues with the next batch.
    (Lightning's ``CombinedLoader(mode="sequential")`` would chain loaders but is refused by the fit loop.)
    """

    def __init__(self, loaders: list[StatefulDataLoader]) -> None:
        self.loaders = loaders
        self.round = 0  # the round to iterate (set by Lightning through set_epoch)
        self.part = 0  # the pass being iterated
        self._active = False  # whether a pass is being iterated
        self._restored: dict[str, Any] | None = None  # a position to continue from (load_state_dict)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    @property
    def sampler(self) -> RoundLoader:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.round = epoch

    def __iter__(self) -> Iterator[Any]:
        # a generator: the round is read at the first batch, after Lightning's set_epoch
        restored, self._restored = self._restored, None
        if restored is not None and restored["round"] != self.round:
            restored = None  # the checkpoint closed its round: this one starts afresh
        first = restored["part"] if restored is not None else 0
        for i in range(first, len(self.loaders)):
            self.part, loader = i, self.loaders[i]
            if i == first and restored is not None and restored["loader"] is not None:
                loader.load_state_dict(restored["loader"])  # the pass continues where the checkpoint left it
            else:
                loader.sampler.set_epoch(self.round * len(self.loaders) + i)
            self._active = True
            yield from loader
            self._active = False
        self.part = len(self.loaders)  # the round is complete: a checkpoint now resumes nothing of it

    def state_dict(self) -> dict[str, Any]:
        state = self.loaders[self.part].state_dict() if self._active else None
        return {"round": self.round, "part": self.part, "loader": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round, self._restored = state["round"], state
