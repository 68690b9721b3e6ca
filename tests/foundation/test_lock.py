"""One writer per output (foundation/ledger/lock.py): a second run refuses naming the holder, a lock
whose holder is gone is taken over with a warning, one of another host only once it is stale."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from foundation.ledger import OutputLocked, output_lock
from foundation.ledger.lock import lock_path

REPO = Path(__file__).resolve().parents[2]

HOLD = textwrap.dedent("""
    import sys, time
    from foundation.ledger import output_lock
    with output_lock(sys.argv[1], "holder"):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _holder(out: Path, seconds: float = 60.0) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(seconds)], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        with pytest.raises(OutputLocked) as err:
            with output_lock(out):
                pass
        message = str(err.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "holder" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_a_refused_run_waits_for_the_holder_to_write_who_it_is(tmp_path):
    """The holder writes its host and pid just after its flock: a run refused in between waits for
    them instead of naming "host ? pid ?" (seen once in the suite, two runs started together)."""
    import fcntl
    import threading

    out = tmp_path / "out"
    path = lock_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, nothing written yet
    late = threading.Timer(0.5, lambda: os.write(fd, json.dumps({"host": "h1", "pid": 4242}).encode()))
    late.start()
    try:
        with pytest.raises(OutputLocked, match=r"host h1 pid 4242"):
            with output_lock(out):
                pass
    finally:
        late.join()
        os.close(fd)


def test_a_killed_holder_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "out"
    holder = _holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    left = json.loads(lock_path(out).read_text())
    assert left["pid"] == holder.pid  # the killed run could not clean up
    with caplog.at_level(logging.WARNING, logger="foundation.ledger.lock"):
        with output_lock(out) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"pid {holder.pid}" in caplog.text and "gone" in caplog.text
    assert not lock_path(out).exists()  # a clean end removes it


def test_the_lock_is_reentrant_in_one_process_and_released_at_the_end(tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        with output_lock(out):
            assert lock_path(out).exists()
        assert lock_path(out).exists()  # the outer holder still holds it
        proc = subprocess.run([sys.executable, "-c", HOLD, str(out), "0"], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode != 0 and "OutputLocked" in proc.stderr
    assert not lock_path(out).exists()
    assert subprocess.run([sys.executable, "-c", HOLD, str(out), "0"], cwd=REPO, capture_output=True).returncode == 0


def test_another_hosts_lock_is_refused_until_it_is_stale(tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    path = lock_path(out)
    path.write_text(json.dumps({"host": "node-7", "pid": 4242, "started": "2026-12-06T00:00:00+00:00"}))
    monkeypatch.setenv("MGTE_LOCK_STALE_S", "120")
    with pytest.raises(OutputLocked, match=r"another machine \(host node-7 pid 4242.*120 s"):
        with output_lock(out):
            pass
    old = time.time() - 121
    os.utime(path, (old, old))  # no heartbeat for longer than MGTE_LOCK_STALE_S
    with caplog.at_level(logging.WARNING, logger="foundation.ledger.lock"):
        with output_lock(out):
            assert json.loads(path.read_text())["host"] == socket.gethostname()
    assert "node-7" in caplog.text


def test_a_bad_stale_age_is_refused(tmp_path, monkeypatch):
    lock_path(tmp_path / "out").write_text(json.dumps({"host": "node-7", "pid": 1}))
    monkeypatch.setenv("MGTE_LOCK_STALE_S", "nan")
    with pytest.raises(Exception, match="MGTE_LOCK_STALE_S='nan'"):
        with output_lock(tmp_path / "out"):
            pass
