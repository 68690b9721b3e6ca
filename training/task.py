"""What a training task is: the typed contract between a stage and :func:`training.loop.train_loop`.

A task supplies the model, the data and the loss; the loop owns everything else (resume,
precision, DDP/DeepSpeed, non-finite skipping, logging, checkpoints, preemption). There are two
kinds, told apart by whether the task has ``train_step``:

- :class:`MicroBatchTask` (MLM): ``step`` is a forward over one micro-batch returning a summed
  loss; the loop does the backward of every micro-batch, scaled so that the gradient is that of
  the global mean over ``units`` (e.g. masked tokens) whatever the number of workers.
- :class:`CustomStepTask` (CPT, and the TRM next): ``train_step`` runs the whole forward/backward
  of one global batch itself (the cached-gradient contrastive step), with the loop's
  :class:`training.steppers.StepContext` for backward, ``no_sync`` and autocast.

Stages subclass the protocol they implement so that a type checker holds them to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from training.steppers import StepContext


@runtime_checkable
class DataSource(Protocol):
    """``next(source)`` -> this rank's micro-batches of one global batch; its position round-trips
    through ``state_dict`` so a resumed run sees the same batches. A source whose
    ``reshardable`` attribute is true may resume on another number of workers."""

    def __next__(self) -> list: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class TrainTask(Protocol):
    """What every task gives the loop."""

    def build_model(self) -> torch.nn.Module:
        """Called after seeding, the same on every rank."""
        ...

    def build_data(self, rank: int, world_size: int) -> DataSource: ...

    def save_model(self, model: torch.nn.Module, out_dir: Path) -> None:
        """The final model (rank 0, the unwrapped module) into ``out_dir``."""
        ...


@runtime_checkable
class MicroBatchTask(TrainTask, Protocol):
    """The loop's default step: forward each micro-batch, backward of the global mean."""

    def step(self, model: torch.nn.Module, micro_batch: Any) -> tuple[torch.Tensor, dict]:
        """(loss summed over the micro-batch's units, metric sums); forward only."""
        ...

    def units(self, micro_batch: Any) -> int:
        """What the loss is a sum over (e.g. masked tokens)."""
        ...

    def tokens(self, micro_batch: Any) -> int:
        """Tokens in the micro-batch, for tokens/s."""
        ...


@runtime_checkable
class CustomStepTask(TrainTask, Protocol):
    """A task that runs the forward/backward of a global batch itself."""

    def train_step(self, ctx: StepContext, model: torch.nn.Module,
                   micro_batches: list) -> tuple[float, float, dict, int]:
        """(loss sum, units, metric sums, tokens) of this rank; backward through ``ctx.backward``."""
        ...


Task = MicroBatchTask | CustomStepTask


def check_task(task: Any) -> None:
    """TypeError naming what is missing, before any model is built."""
    if not isinstance(task, TrainTask):
        raise TypeError(f"{type(task).__name__} is not a TrainTask: it needs build_model, build_data and save_model")
    if not isinstance(task, (CustomStepTask, MicroBatchTask)):
        raise TypeError(f"{type(task).__name__} needs either train_step(ctx, model, micro_batches) or "
                        "step(model, micro_batch), units(micro_batch) and tokens(micro_batch)")
