"""A deterministic fault hook for tests (docs/reliability.md): fail at a named point, once.

``MGTE_FAULT="point=before_marker,count=2,action=exit137,once=/tmp/f"`` makes the 2nd call of
``fault_point("before_marker")`` in this process kill it with ``os._exit(137)``; with ``once`` the
fault fires only if that file does not exist yet (it is created first), so a rerun succeeds.
Several faults are separated by ``;``. Actions: ``exit137``, ``enospc`` (raise OSError ENOSPC),
``sigterm`` (send SIGTERM to this process), ``nan`` (``fault_point`` returns True: the caller
poisons its value), ``pause`` (sleep ``seconds``, default 120: a window in which a test kills
something else, e.g. a node of a cluster). ``rank=N`` fires only in the process whose ``RANK``
environment variable is N (a Ray Train or torchrun worker; unset counts as 0). Without the
variable every call is a cheap no-op.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass

ENV = "MGTE_FAULT"
_calls: Counter[str] = Counter()


@dataclass(frozen=True)
class Fault:
    point: str
    count: int = 1
    action: str = "exit137"
    once: str | None = None
    seconds: float = 120.0
    rank: int | None = None


def parse(spec: str) -> list[Fault]:
    faults = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        kv = dict(item.split("=", 1) for item in part.split(","))
        faults.append(Fault(point=kv["point"], count=int(kv.get("count", 1)),
                            action=kv.get("action", "exit137"), once=kv.get("once"),
                            seconds=float(kv.get("seconds", 120)),
                            rank=int(kv["rank"]) if "rank" in kv else None))
    return faults


def reset() -> None:
    """Forget how often each point was reached (a new fault plan starts counting from zero)."""
    _calls.clear()


def fault_point(name: str, path: str | None = None) -> bool:
    """Mark a point; fire a configured fault there. Returns True only for action ``nan``."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    _calls[name] += 1
    for fault in parse(spec):
        if fault.point != name or _calls[name] != fault.count:
            continue
        if fault.rank is not None and int(os.environ.get("RANK", 0)) != fault.rank:
            continue
        if fault.once:
            if os.path.exists(fault.once):
                continue
            with open(fault.once, "w") as fh:
                fh.write(name)
        if fault.action == "exit137":
            os._exit(137)
        if fault.action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or name)
        if fault.action == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            return False
        if fault.action == "nan":
            return True
        if fault.action == "pause":
            time.sleep(fault.seconds)
            return False
        raise ValueError(f"{ENV}: unknown action {fault.action!r}")
    return False
