"""The shared training order (datamodules/sampling.py): a pure function of (seed, epoch, rank), resumable at any
position of any epoch — also when, as Lightning does on resume, the loader replays the position before it is told
the epoch."""

from __future__ import annotations

import pytest
from torchdata.stateful_dataloader import StatefulDataLoader

from datamodules.sampling import EpochSampler


def test_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(range(50), 4, seed=3), EpochSampler(range(50), 4, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(EpochSampler(range(50), 4, seed=3, shuffle=False)) == list(range(50))


@pytest.mark.parametrize("epoch, stop", [(0, 7), (2, 5), (3, 0)])
def test_loader_resumes_mid_epoch_before_it_is_told_the_epoch(epoch, stop):
    def loader() -> StatefulDataLoader:
        return StatefulDataLoader(list(range(40)), batch_size=3, sampler=EpochSampler(range(40), 3, seed=11))

    uninterrupted = loader()
    uninterrupted.sampler.set_epoch(epoch)
    expected = [b.tolist() for b in uninterrupted]
    interrupted = loader()
    interrupted.sampler.set_epoch(epoch)
    it = iter(interrupted)
    seen = [next(it).tolist() for _ in range(stop)]
    state = interrupted.state_dict()
    resumed = loader()  # a fresh process: epoch 0 until Lightning's set_epoch, which comes after the replay
    resumed.load_state_dict(state)
    rest = [b.tolist() for b in resumed]
    assert seen + rest == expected
    assert resumed.sampler.epoch == epoch


def test_keys_carry_the_epoch_when_examples_change_per_epoch():
    s = EpochSampler(range(6), 2, seed=0, keys_with_epoch=True)
    s.set_epoch(4)
    assert {e for e, _ in s} == {4} and sorted(i for _, i in s) == list(range(6))
    fixed = EpochSampler(range(6), 2, seed=0, keys_with_epoch=True, fixed_epoch=0, shuffle=False)
    fixed.set_epoch(9)
    assert list(fixed) == [(0, i) for i in range(6)]


@pytest.mark.parametrize("set_epoch_first", [True, False])
def test_a_checkpoint_on_the_last_batch_of_an_epoch_resumes_with_the_next_epoch(set_epoch_first):
    def loader() -> StatefulDataLoader:
        return StatefulDataLoader(list(range(12)), batch_size=3, sampler=EpochSampler(range(12), 3, seed=5))

    reference = loader()
    reference.sampler.set_epoch(2)
    expected = [b.tolist() for b in reference]
    finished = loader()
    finished.sampler.set_epoch(1)
    list(finished)  # the whole of epoch 1: the checkpoint is taken on its last batch
    resumed = loader()
    resumed.load_state_dict(finished.state_dict())
    if set_epoch_first:  # Lightning may or may not have moved the sampler on before it iterates
        resumed.sampler.set_epoch(2)
    assert [b.tolist() for b in resumed] == expected
