"""A toy regression task for the generic loop's tests (not product code)."""

from __future__ import annotations

import numpy as np
import torch

from training.task import MicroBatchTask


class ToyData:
    """Global batch i is a pure function of (seed, i); rank r takes every world_size-th row."""

    reshardable = True

    def __init__(self, seed: int, rank: int, world_size: int, rows: int = 8, micro: int = 2,
                 reshardable: bool = True):
        self.seed, self.rank, self.world_size, self.rows, self.micro = seed, rank, world_size, rows, micro
        self.pos = 0
        self.reshardable = reshardable
        self.seen: list[int] = []

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.pos])
        x = rng.standard_normal((self.rows, 4)).astype(np.float32)
        y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32) + 0.1).astype(np.float32)
        self.seen.append(self.pos)
        self.pos += 1
        x, y = torch.from_numpy(x[self.rank::self.world_size]), torch.from_numpy(y[self.rank::self.world_size])
        return [(xs, ys) for xs, ys in zip(torch.chunk(x, self.micro), torch.chunk(y, self.micro))]

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


class ToyTask(MicroBatchTask):
    def __init__(self, seed: int = 0, reshardable: bool = True):
        self.seed = seed
        self.reshardable = reshardable
        self.data = None

    def build_model(self):
        return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))

    def build_data(self, rank, world_size):
        self.data = ToyData(self.seed, rank, world_size, reshardable=self.reshardable)
        return self.data

    def units(self, mb):
        return mb[0].shape[0]

    def tokens(self, mb):
        return mb[0].numel()

    def step(self, model, mb):
        x, y = mb
        pred = model(x).squeeze(-1).float()
        err = pred - y
        return (err ** 2).sum(), {"abs_err": err.abs().sum().detach()}

    def save_model(self, model, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out_dir / "model.pt")


def toy_train_func(config: dict) -> None:
    """Ray Train worker entry for the toy task (what a stage's train_func looks like)."""
    from pathlib import Path

    from training.loop import LoopConfig, train_loop
    from training.optim import OptimConfig
    from training.ray_entry import ray_reporter, worker_world

    cfg = LoopConfig(max_steps=config["max_steps"], log_every=1, ckpt_every=config["ckpt_every"], progress=False,
                     tensorboard=False, optim=OptimConfig(lr=0.05, warmup_ratio=0.1))
    out = Path(config["out"])
    train_loop(ToyTask(), cfg, ckpt_dir=out / "checkpoints", output_dir=out, world=worker_world(),
               config=config, report=None if config.get("_local") else ray_reporter)
