"""What happened to a training run's workers, told on the driver: ``OUTPUT/_events.jsonl``.

Ray Train restarts failed workers (``scaling.max_failures``) and they resume from the newest
checkpoint, but the failure and the resume happen in other processes: the controller actor and
the workers. Three writers append one JSON line each to the run's events file:

- the driver, as it launches: ``{"event": "launch", "run": name, "max_failures": n}``;
- Ray Train's controller, when workers fail (a callback, :func:`training.ray_entry.launch`):
  ``{"event": "failed", "errors": {"1": "ActorDiedError: ..."}, "lost": ["1"]}``, rank -> its
  error on one line (:func:`one_line`, at most ``ERROR_CHARS``); ``lost``: the ranks whose process
  died or stopped answering, as opposed to ranks whose code raised;
- rank 0 of every attempt, once it has resumed (:func:`record_start`, ``train_loop``'s
  ``on_start``): ``{"event": "started", "resumed_from": 4}`` (null: from step 0).

The driver reads the file while ``fit()`` runs (:class:`Tail`) and logs one line per failure and
one per attempt through :class:`Attempts`, the one place that turns events into words, e.g.
``Ray Train attempt 2: resumed from step 4 after rank 1 failed: ActorDiedError: ...``. When a
worker dies its peers usually fail too (gloo: "Connection closed by peer"): the lost ranks are
named first, the others after them, ``(also rank 0: RuntimeError: ...)``. A worker that died
with no error recorded (Ray Train V1 has no controller callback) is told as "after a worker was
lost (no error recorded)". :func:`read_retries` gives the retries of the last launch for the manifest
(``extra.retries``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

EVENTS = "_events.jsonl"  # in the stage's output directory
ERROR_CHARS = 200  # a failed rank's error in an event (Ray's ActorDiedError runs to ~700)


def append_event(path: str | Path, event: str, **fields) -> None:
    """Append one event line (one ``write`` on an ``O_APPEND`` file, so writers do not interleave).
    A failure to write is logged, never raised: telling about a run must not stop it."""
    line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot record the %s event in %s: %s", event, path, exc)


def record_start(path: str | Path, resumed_from: int | None) -> None:
    """Rank 0's event once an attempt has resumed (``train_loop``'s ``on_start``)."""
    append_event(path, "started", resumed_from=resumed_from)


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """``Type: last line of the message`` of the innermost error (a Ray health-check failure: the
    error it wraps, e.g. the ``ActorDiedError`` of a killed worker), cut to ``limit`` characters."""
    seen = getattr(exc, "health_check_failure", None) or exc
    while seen.__cause__ is not None:
        seen = seen.__cause__
    lines = [line.strip() for line in str(seen).strip().splitlines() if line.strip()]
    text = f"{type(seen).__name__}: {lines[-1] if lines else ''}"
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


class Attempts:
    """The events of one launch, as log lines and the list of retries."""

    def __init__(self):
        self.attempt = 0
        self.failed: dict[str, str] = {}  # rank -> error, since the last attempt started
        self.lost: set[str] = set()  # of those, the ranks whose process died or stopped answering
        self.retries: list[dict] = []

    def add(self, event: dict) -> tuple[int, str] | None:
        """Take one event; returns ``(level, line)`` to log, or None."""
        kind = event.get("event")
        if kind == "launch":
            self.__init__()
            return None
        if kind == "failed":
            new = {r: e for r, e in event.get("errors", {}).items() if self.failed.get(r) != e}
            self.failed.update(new)
            self.lost.update(event.get("lost", ()))
            if not new:
                return None
            return logging.WARNING, f"Ray Train attempt {self.attempt}: {_failures(new, self.lost)}"
        if kind != "started":
            return None
        self.attempt += 1
        step = event.get("resumed_from")
        start = f"resumed from step {step}" if step is not None else "started from step 0"
        if self.attempt == 1:
            return logging.INFO, f"Ray Train attempt 1: {start}"
        self.retries.append({"attempt": self.attempt, "resumed_from": step, "failed": dict(self.failed),
                             "lost": sorted(self.lost, key=int)})
        why = _failures(self.failed, self.lost) if self.failed else "a worker was lost (no error recorded)"
        self.failed, self.lost = {}, set()
        return logging.WARNING, f"Ray Train attempt {self.attempt}: {start} after {why}"


def _failures(errors: dict[str, str], lost: set[str]) -> str:
    """The lost ranks first (the cause, usually), then the others: ``rank 1 failed: E1 (also rank 0: E0)``."""
    ranks = sorted(errors, key=int)
    first = [r for r in ranks if r in lost] or ranks
    rest = [r for r in ranks if r not in first]
    if len(first) == 1:
        said = f"rank {first[0]} failed: {errors[first[0]]}"
    else:
        said = f"ranks {', '.join(first)} failed: " + "; ".join(f"rank {r}: {errors[r]}" for r in first)
    return said + (f" (also {'; '.join(f'rank {r}: {errors[r]}' for r in rest)})" if rest else "")


class Tail:
    """Driver side, around ``fit()``: logs the events appended to ``path`` from now on.

    ``with Tail(path): trainer.fit()`` reads new lines every ``every`` seconds in a thread and
    once more on exit, so the last failure before a final error is told too."""

    def __init__(self, path: str | Path, *, every: float = 0.5, emit: Callable[[int, str], None] | None = None):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        self.every = every
        self.emit = emit or (lambda level, line: log.log(level, "%s", line))
        self.attempts = Attempts()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="train-events", daemon=True)

    def __enter__(self) -> "Tail":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.poll()

    def poll(self) -> None:
        """Read the complete lines appended since the last call and log them."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self.offset += end
        for raw in data[:end].splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                log.warning("%s: unreadable event line %r", self.path, raw[:200])
                continue
            said = self.attempts.add(event)
            if said is not None:
                self.emit(*said)


def read_retries(path: str | Path) -> list[dict]:
    """The retries of the last launch recorded in ``path``: ``[{attempt, resumed_from, failed, lost}]``,
    ``failed`` mapping rank -> error (empty: a worker was lost without a recorded error), ``lost``
    the ranks whose process died or stopped answering."""
    path = Path(path)
    attempts = Attempts()
    if path.exists():
        for raw in path.read_bytes().splitlines():
            try:
                event = json.loads(raw)
            except ValueError:  # a line cut by a killed writer: the Tail warned about it during the run
                continue
            attempts.add(event)
    return attempts.retries
