"""BERT's optimisation, stated once (Devlin et al., 2019, appendix A.2; Google's ``optimization.py``).

- :class:`AdamW`: ``torch.optim.AdamW`` with BERT's defaults (lr 1e-4, betas (0.9, 0.999), eps 1e-6, decoupled
  weight decay 0.01);
- :func:`parameter_groups`: matrices decay, vectors (biases, LayerNorm weights) do not — built by the task before
  it calls whatever optimiser the config names, so ``--model.optimizer torch.optim.SGD`` keeps the groups;
- :class:`LinearWarmupDecay`: the learning-rate multiplier rises linearly from 0 to 1 over the warmup, then falls
  linearly to 0 at the last step.

Tasks take an optimiser and a scheduler the LightningCLI way (``OptimizerCallable`` / ``LRSchedulerCallable``)::

    model:
      init_args:
        optimizer:
          class_path: multibert.core.optim.AdamW
          init_args: {lr: 2.0e-5}
        lr_scheduler:
          class_path: multibert.core.optim.LinearWarmupDecay
          init_args: {warmup_steps: 0.1}
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with BERT's defaults.

    Args:
        params: parameters or parameter groups (:func:`parameter_groups`).
        lr: peak learning rate.
        betas: Adam's betas.
        eps: Adam's epsilon (BERT used 1e-6, not torch's 1e-8).
        weight_decay: decoupled weight decay of the groups that do not set their own (the no-decay group sets 0).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


def parameter_groups(module: nn.Module) -> list[dict[str, Any]]:
    """BERT's two groups over the trainable parameters (each tied parameter once): matrices take the optimiser's
    weight decay, vectors (biases, LayerNorm gains, the MLM output bias) take none."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_decay_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: 0 → 1 linearly over ``warmup_steps``, then 1 → 0 linearly at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


class LinearWarmupDecay(torch.optim.lr_scheduler.LambdaLR):
    """BERT's schedule: linear warmup, then linear decay to zero at ``total_steps``; stepped every optimiser step.

    Args:
        optimizer: the optimiser.
        warmup_steps: warmup length in optimiser steps; a value in (0, 1) is a fraction of ``total_steps``.
        total_steps: the number of optimiser steps; the task fills it from ``trainer.estimated_stepping_batches``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: float = 10000, total_steps: int | None = None) -> None:
        if total_steps is None or not math.isfinite(total_steps) or total_steps < 1:
            raise ValueError(
                f"LinearWarmupDecay decays to zero at the last step and needs total_steps (got {total_steps}); "
                "set trainer.max_steps or trainer.max_epochs, or choose another model.lr_scheduler"
            )
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps * total_steps) if 0 < warmup_steps < 1 else int(warmup_steps)
        super().__init__(optimizer, lambda step: warmup_decay_factor(step, self.warmup_steps, self.total_steps))


def callable_class(fn: Callable[..., Any]) -> type | None:
    """The class an optimiser / scheduler / adapter callable builds: the class itself, a ``functools.partial`` of
    it, or jsonargparse's ``partial(instantiate, instantiator, cls, **init_args)``."""
    if isinstance(fn, type):
        return fn
    for candidate in (getattr(fn, "func", None), *getattr(fn, "args", ())):
        if isinstance(candidate, type):
            return candidate
    return None


def build_scheduler(
    factory: Callable[..., torch.optim.lr_scheduler.LRScheduler], optimizer: torch.optim.Optimizer, total_steps: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Call a scheduler factory; schedules that take ``total_steps`` (such as :class:`LinearWarmupDecay`) get the
    trainer's estimate."""
    cls = callable_class(factory)
    takes_total = cls is not None and "total_steps" in inspect.signature(cls.__init__).parameters
    return factory(optimizer, total_steps=total_steps) if takes_total else factory(optimizer)
