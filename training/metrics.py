"""Training metrics: one JSON line per logged step, TensorBoard when installed (the progress bar or
log lines: foundation/progress.py).

Only rank 0 writes (``enabled=False`` elsewhere makes every call a no-op). The JSONL file is
appended to, so a resumed run continues the same file; each line carries ``step`` and ``time``.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _clean(value):
    """JSON-safe scalars: tensors -> float, non-finite floats -> their string (valid JSON)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """``log(step, {name: value})`` to ``path`` (JSONL) and, if available, TensorBoard."""

    def __init__(self, path: str | Path | None, *, tensorboard_dir: str | Path | None = None, enabled: bool = True):
        self.enabled = enabled and path is not None
        self.path = Path(path) if path is not None else None
        self._fh = None
        self._tb = None
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                log.debug("tensorboard not installed; metrics go to %s only", self.path)
            else:
                self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in metrics.items()})
        self._fh.write(json.dumps(row, sort_keys=False) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Throughput:
    """Tokens (or any unit) per second between two ``rate()`` calls."""

    def __init__(self):
        self._t = time.perf_counter()
        self._n = 0

    def add(self, n: int) -> None:
        self._n += n

    def rate(self) -> float:
        now = time.perf_counter()
        value = self._n / max(now - self._t, 1e-9)
        self._t, self._n = now, 0
        return value
