"""One writer per output directory: an exclusive lock taken before a stage touches anything.

The lock is a file beside the output, ``<parent>/.<name>.lock`` (beside, not inside: a DAG moves
a stale output aside under its own lock, and a copied output carries no lock along). Its holder
keeps an exclusive ``flock`` on it for as long as the run lasts and writes in it who it is
(host, pid, start time); a thread touches it every :data:`HEARTBEAT_S` seconds. A second run
refuses in one line naming the holder (:class:`OutputLocked`, exit 2).

A lock left behind (the holder was killed) is taken over with a warning:

- on the holder's host: when its ``flock`` is free, the holder's process is gone (the kernel
  drops the lock of a process that exits, however it exits);
- from another host (shared storage, where a lock of another machine may not be visible):
  when the holder has not touched the file for ``MGTE_LOCK_STALE_S`` seconds (default 600).

The lock is re-entrant in one process (a DAG holds each step's lock while the stage, which takes
it again, runs). A clean end removes the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from foundation.errors import StageConflict, StageIOError

log = logging.getLogger(__name__)

STALE_ENV = "MGTE_LOCK_STALE_S"
DEFAULT_STALE_S = 600.0
HEARTBEAT_S = 30.0
HOLDER_WAIT_S = 2.0  # ours: how long a refused run waits for the holder to write who it is (it does so just after its flock)


class OutputLocked(StageConflict):
    """Another run writes this output now (exit 2); the message names it."""


def lock_path(root: str | Path) -> Path:
    root = Path(os.path.abspath(root))
    return root.parent / f".{root.name}.lock"


def stale_after() -> float:
    raw = os.environ.get(STALE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_STALE_S
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise StageConflict(f"{STALE_ENV}={raw!r}: expected a positive number of seconds")
    return value


def _describe(holder: dict, path: Path) -> str:
    try:
        ago = f", last seen {time.time() - path.stat().st_mtime:.0f} s ago"
    except OSError:
        ago = ""
    return (f"host {holder.get('host', '?')} pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"
            f"{', running ' + holder['command'] if holder.get('command') else ''}{ago}")


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 1 << 16)
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        data = {"host": "?", "note": "unreadable lock file"}
    return data if isinstance(data, dict) else {}


class _Lock:
    def __init__(self, path: Path, fd: int):
        self.path, self.fd, self.count = path, fd, 1
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock {path.name}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.fd)

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            # removed while still held: a run that opened the old file and gets its flock once this
            # one closes sees that the path is gone or names another file, and tries again
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)
        os.close(self.fd)


_held: dict[str, _Lock] = {}
_mutex = threading.Lock()


def _take_over_or_refuse(root: Path, path: Path, holder: dict) -> None:
    """A lock file whose flock is free but whose holder never removed it."""
    host = socket.gethostname()
    if holder.get("host") in (host, None):
        log.warning("%s: taking over the lock of a run that is gone (%s); its work is resumed", root,
                    _describe(holder, path))
        return
    age = time.time() - path.stat().st_mtime
    limit = stale_after()
    if age < limit:
        raise OutputLocked(
            f"{root} is locked by a run on another machine ({_describe(holder, path)}); wait for it, or once it is "
            f"surely gone delete {path} (it is taken over by itself after {limit:.0f} s without a heartbeat, "
            f"{STALE_ENV})")
    log.warning("%s: taking over the lock of a run on %s with no heartbeat for %.0f s (over %s=%.0f)", root,
                holder.get("host"), age, STALE_ENV, limit)


def _acquire(root: Path, command: str) -> _Lock:
    path = lock_path(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StageIOError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StageIOError(f"cannot create the lock {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise StageIOError(f"cannot lock {path}: {exc.strerror or exc}") from exc
            holder = _read_holder(fd)
            deadline = time.monotonic() + HOLDER_WAIT_S
            while "pid" not in holder and time.monotonic() < deadline:  # it writes who it is just after its flock
                time.sleep(0.05)
                holder = _read_holder(fd)
            os.close(fd)
            raise OutputLocked(f"{root} is being written by another run ({_describe(holder, path)}); "
                               "wait for it to finish, or stop it first") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its holder released (removed) it between our open and our flock
            os.close(fd)
            continue
        try:
            holder = _read_holder(fd)
            if holder:
                _take_over_or_refuse(root, path, holder)
            me = {"host": socket.gethostname(), "pid": os.getpid(),
                  "command": command or " ".join(["mgte", *sys.argv[1:]])[:300],
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return _Lock(path, fd)
    raise OutputLocked(f"{root}: the lock {path} keeps changing hands; another run is starting, try again")


@contextlib.contextmanager
def output_lock(root: str | Path, command: str = "") -> Iterator[Path]:
    """Hold the exclusive lock of output ``root`` for the block (re-entrant in this process)."""
    root = Path(os.path.abspath(root))
    key = str(lock_path(root))
    with _mutex:
        lock = _held.get(key)
        if lock is not None:
            lock.count += 1
        else:
            lock = _held[key] = _acquire(root, command)
    try:
        yield lock.path
    finally:
        with _mutex:
            lock.count -= 1
            if lock.count == 0:
                del _held[key]
                lock.release()
