"""The order in which a datamodule's training examples are read, shared by every data family.

:class:`EpochSampler` is a pure function of ``(seed, epoch)`` and the rank, so a run is reproducible, and it is
stateful, so that ``torchdata``'s ``StatefulDataLoader`` — whose state Lightning saves in every checkpoint —
resumes an interrupted epoch at the exact example it stopped at (bit-exact resume, tested per family).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, DistributedSampler


class EpochSampler(DistributedSampler):
    """The training order of every datamodule: a seeded shuffle per epoch, one disjoint shard per rank, and
    (optionally) length bucketing — within windows of ``bucket_batches`` batches, examples are sorted by length so a
    batch holds similar lengths, then the batches are shuffled. Yields indices, or ``(epoch, index)`` keys with
    ``keys_with_epoch`` for datasets whose examples change per epoch (fresh masks and pairs).

    A ``DistributedSampler`` subclass, so Lightning keeps it under DDP instead of replacing it, and calls
    ``set_epoch`` on it. ``fixed_epoch`` pins the epoch (validation data keeps the same masks every epoch).

    Stateful (``state_dict`` / ``load_state_dict``: the epoch and the keys handed out), so that ``torchdata``'s
    ``StatefulDataLoader`` restores the position inside an epoch from it. The epoch must be part of that state:
    on resume Lightning creates the loader's iterator (which replays the position) before it calls ``set_epoch``,
    so a sampler that only knew its position would replay epoch 0's order in a later epoch.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        lengths: np.ndarray | None = None,
        bucket_batches: int = 50,
        fixed_epoch: int | None = None,
        keys_with_epoch: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.lengths = lengths
        self.bucket_batches = bucket_batches
        self.fixed_epoch = fixed_epoch
        self.keys_with_epoch = keys_with_epoch
        self.yielded = 0  # keys handed out in the current epoch
        self._restored: tuple[int, int] | None = None  # (epoch, keys handed out) from a checkpoint

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.set_epoch(int(state["epoch"]))
        self._restored = (int(state["epoch"]), int(state["yielded"]))

    def __iter__(self):
        # a generator: where to start is decided at the first key, once Lightning has set the epoch
        epoch, skip = self._start()
        keys = self._keys(epoch)
        self.epoch, self.yielded = epoch, skip
        for key in keys[skip:]:
            self.yielded += 1
            yield key

    def _start(self) -> tuple[int, int]:
        """(epoch, keys to skip) of the next pass. After a checkpoint taken inside an epoch: that epoch, from where it
        stopped. After one taken on an epoch's last batch: Lightning goes on with the next epoch (it may not have
        called ``set_epoch`` yet), from its start."""
        restored, self._restored = self._restored, None
        if restored is None:
            return self.epoch, 0
        epoch, yielded = restored
        if yielded < len(self._keys(epoch)):
            return epoch, yielded
        return max(self.epoch, epoch + 1), 0

    def _keys(self, epoch: int) -> list[int] | list[tuple[int, int]]:
        epoch = epoch if self.fixed_epoch is None else self.fixed_epoch
        n = len(self.dataset)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if self.total_size > n:  # pad so that every rank gets the same number of examples
            order = np.concatenate([order, order[: self.total_size - n]])
        order = order[self.rank : self.total_size : self.num_replicas]
        if self.lengths is not None:
            window = self.batch_size * self.bucket_batches
            batches = []
            for w in range(0, len(order), window):
                chunk = order[w : w + window]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                batches.extend(chunk[b : b + self.batch_size] for b in range(0, len(chunk), self.batch_size))
            if self.shuffle:
                batches = [batches[i] for i in rng.permutation(len(batches))]
            order = np.concatenate(batches) if batches else order
        return [(epoch, int(i)) for i in order] if self.keys_with_epoch else [int(i) for i in order]
