"""How far long work is: a tqdm bar on a terminal, log lines everywhere else (CONTRACT.md).

When stderr is not a terminal (cron, Ray workers, CI, ``> log``), a :class:`Progress` logs
(logger ``foundation.progress``, INFO) at most once every ``interval`` seconds::

    rerank: 4,000/15,260 pairs (26%), 12.1/s, ~15m31s left

and, when the work took at least ``interval`` seconds, one last line at :meth:`Progress.close`::

    rerank: done 15,260/15,260 pairs in 21m02s (12.1/s)

(``stopped at`` instead of ``done`` when it ended early, e.g. on an error). Work that finishes
within the interval logs nothing. When one item takes longer than the interval (an index build, a
long document), a heartbeat thread logs the same line, marked ``(working on the next)``, so a log
never goes silent for longer than the interval. The interval is 30 s, or ``MGTE_PROGRESS_INTERVAL_S``, or the
``interval`` argument. The rate is over the whole run so far (items done here, not ``initial``), the
time left is what remains at that rate; the clock is monotonic.

``enabled=False`` silences a report altogether (another rank than 0, a phase with nothing to do).
``bar=False`` (a config's ``progress: false``) turns off the bar only: the log lines then come on a
terminal too, so long work always says how far it is.

In a process where nobody configured logging (a Ray worker: Ray sets up only its own ``ray``
logger), the lines go to stderr through a handler of this logger's own, which Ray forwards to the
driver's log.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

ENV_INTERVAL = "MGTE_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 30.0

log = logging.getLogger(__name__)
clock = time.monotonic  # module attribute so tests can drive time


def on_tty() -> bool:
    return sys.stderr.isatty()


def interval_s(interval: float | None = None) -> float:
    """``interval``, else ``$MGTE_PROGRESS_INTERVAL_S``, else 30 s."""
    if interval is None:
        raw = os.environ.get(ENV_INTERVAL, "").strip()
        try:
            interval = float(raw) if raw else DEFAULT_INTERVAL_S
        except ValueError:
            raise ValueError(f"{ENV_INTERVAL}={raw!r}: expected seconds (a number >= 0)") from None
    if not math.isfinite(interval) or interval < 0:
        raise ValueError(f"progress interval {interval!r}: expected seconds (a number >= 0)")
    return float(interval)


def duration(seconds: float) -> str:
    """``42s``, ``1m32s``, ``2h05m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(rate: float) -> str:
    return f"{rate:,.1f}/s" if rate >= 0.1 else f"{rate:.2g}/s"


def _ensure_handler() -> None:
    """Nobody configured logging here (a Ray worker): give this logger a stderr handler at INFO."""
    if log.hasHandlers() or log.level != logging.NOTSET:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class Progress:
    """``total`` items, ``initial`` of them already done (a resumed run); :meth:`update` per item(s).

    A tqdm bar when ``bar`` and stderr is a terminal, log lines otherwise (see the module
    docstring); nothing when not ``enabled``. ``unit`` is the plural noun of the log lines."""

    def __init__(self, total: int | None, initial: int = 0, *, enabled: bool = True, bar: bool = True,
                 desc: str = "train", unit: str = "steps", interval: float | None = None):
        self.total, self.initial, self.done = total, initial, initial
        self.desc, self.unit = desc, unit
        self.postfix: dict = {}
        self._bar = None
        self._logs = False
        if not enabled:
            return
        if bar and on_tty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
            return
        self._logs = True
        self.interval = interval_s(interval)
        _ensure_handler()
        self._start = self._last = clock()
        self._lock = threading.Lock()
        self._said = time.monotonic()  # real time of the last line, for the heartbeat
        self._stop = threading.Event()
        if self.interval > 0:  # one item may take longer than the interval: a line anyway
            threading.Thread(target=self._heartbeat, name=f"progress {desc}", daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._logs and time.monotonic() - self._said >= self.interval:
                    self._said = time.monotonic()
                    log.info("%s (working on the next)", self.line(clock()))

    def update(self, n: int = 1, **postfix) -> None:
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix({k: _short(v) for k, v in postfix.items()}, refresh=False)
            self._bar.update(n)
            return
        if not self._logs:
            return
        self.done += n
        if postfix:
            self.postfix = postfix
        now = clock()
        if now - self._last >= self.interval:
            with self._lock:
                self._last, self._said = now, time.monotonic()
                log.info("%s", self.line(now))

    def line(self, now: float) -> str:
        """``desc: done/total unit (pct), rate, ~left`` as of ``now``."""
        elapsed = now - self._start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}" if self.total is not None
                 else f"{self.desc}: {self.done:,} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done // self.total}%)"
        parts.append(_rate(rate))
        if self.total is not None:
            left = max(self.total - self.done, 0)
            parts.append(f"~{duration(left / rate)} left" if rate > 0 else "time left unknown")
        parts += [f"{k}={_short(v)}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self._logs:
            return
        with self._lock:
            self._logs = False
        self._stop.set()
        elapsed = clock() - self._start
        if elapsed < self.interval:  # quick work: no lines at all
            return
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        how = "done" if self.total is None or self.done >= self.total else "stopped at"
        count = f"{self.done:,}/{self.total:,}" if self.total is not None else f"{self.done:,}"
        log.info("%s: %s %s %s in %s (%s)", self.desc, how, count, self.unit, duration(elapsed), _rate(rate))

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def progress(items: Iterable[T], desc: str, unit: str = "batches", *, total: int | None = None,
             weight=None, enabled: bool = True, bar: bool = True, interval: float | None = None) -> Iterator[T]:
    """``items``, reporting as a :class:`Progress` each one done (when the loop asks for the next).

    ``total`` defaults to ``len(items)``; ``weight(item)`` counts an item as that many ``unit``
    (a batch as its texts), and then ``total`` is the sum of the weights."""
    if total is None and hasattr(items, "__len__"):
        total = sum(weight(i) for i in items) if weight is not None else len(items)
    report = Progress(total, enabled=enabled, bar=bar, desc=desc, unit=unit, interval=interval)
    try:
        for item in items:
            yield item
            report.update(weight(item) if weight is not None else 1)
    finally:
        report.close()
