"""foundation/progress.py: log lines off a terminal (done/total, rate, time left), a bar on one."""

import logging

import pytest

from foundation import progress as P


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(P, "clock", fake)
    monkeypatch.setattr(P, "on_tty", lambda: False)
    monkeypatch.delenv(P.ENV_INTERVAL, raising=False)
    return fake


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == P.log.name]


def test_slow_loop_logs_done_total_rate_and_time_left(clock, caplog):
    caplog.set_level(logging.INFO, logger=P.log.name)
    bar = P.Progress(10, desc="rerank", unit="pairs", interval=3)
    for _ in range(10):
        clock.t += 1.0  # one item a second
        bar.update()
    bar.close()
    assert lines(caplog) == [
        "rerank: 3/10 pairs (30%), 1.0/s, ~7s left",
        "rerank: 6/10 pairs (60%), 1.0/s, ~4s left",
        "rerank: 9/10 pairs (90%), 1.0/s, ~1s left",
        "rerank: done 10/10 pairs in 10s (1.0/s)",
    ]


def test_rate_counts_only_work_done_here_and_big_numbers_read_well(clock, caplog):
    caplog.set_level(logging.INFO, logger=P.log.name)
    bar = P.Progress(5_000, 1_000, desc="train", unit="steps", interval=30)
    clock.t += 40
    bar.update(200, loss=1.23456)  # 200 steps in 40 s: 5/s; 3,800 left: 12m40s
    clock.t += 20
    bar.close()
    assert lines(caplog) == ["train: 1,200/5,000 steps (24%), 5.0/s, ~12m40s left, loss=1.235",
                             "train: stopped at 1,200/5,000 steps in 1m00s (3.3/s)"]


def test_fast_loop_logs_nothing(clock, caplog):
    caplog.set_level(logging.INFO, logger=P.log.name)
    for _ in P.progress(range(100), "encode", interval=3):
        clock.t += 0.01  # 1 s in all, under the interval
    assert lines(caplog) == []


def test_progress_over_items_weights_and_env_interval(clock, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=P.log.name)
    monkeypatch.setenv(P.ENV_INTERVAL, "0")
    batches = [[1, 2, 3], [4, 5], [6]]
    seen = []
    for batch in P.progress(batches, "encode", unit="texts", weight=len):
        clock.t += 2
        seen.append(batch)
    assert seen == batches
    assert lines(caplog) == ["encode: 3/6 texts (50%), 1.5/s, ~2s left",
                             "encode: 5/6 texts (83%), 1.2/s, ~1s left",
                             "encode: 6/6 texts (100%), 1.0/s, ~0s left",
                             "encode: done 6/6 texts in 6s (1.0/s)"]


def test_disabled_is_silent_and_bar_false_logs_even_on_a_tty(clock, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=P.log.name)
    quiet = P.Progress(3, enabled=False, interval=0)
    clock.t += 5
    quiet.update(3)
    quiet.close()
    assert lines(caplog) == []
    monkeypatch.setattr(P, "on_tty", lambda: True)
    logged = P.Progress(3, bar=False, desc="x", unit="tasks", interval=0)
    clock.t += 1
    logged.update(3)
    logged.close()
    assert lines(caplog) == ["x: 3/3 tasks (100%), 3.0/s, ~0s left", "x: done 3/3 tasks in 1s (3.0/s)"]


def test_on_a_tty_a_bar_and_no_log_lines(clock, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=P.log.name)
    monkeypatch.setattr(P, "on_tty", lambda: True)
    made = []

    class FakeTqdm:
        def __init__(self, **kw):
            made.append(kw)
            self.n = 0

        def update(self, n):
            self.n += n

        def set_postfix(self, *a, **kw):
            pass

        def close(self):
            made.append(("closed", self.n))

    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", FakeTqdm)
    for _ in P.progress(range(4), "encode", unit="texts", interval=0):
        clock.t += 10
    assert made[0]["total"] == 4 and made[0]["desc"] == "encode" and made[-1] == ("closed", 4)
    assert lines(caplog) == []


def test_unknown_total_and_bad_interval(clock, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=P.log.name)
    for _ in P.progress(iter(range(2)), "bm25", unit="queries", interval=0):
        clock.t += 1
    assert lines(caplog)[0] == "bm25: 1 queries, 1.0/s"
    monkeypatch.setenv(P.ENV_INTERVAL, "soon")
    with pytest.raises(ValueError, match=P.ENV_INTERVAL):
        P.Progress(3)


def test_duration():
    assert [P.duration(s) for s in (0.4, 42, 92, 3599, 7500)] == ["0s", "42s", "1m32s", "59m59s", "2h05m"]


def test_a_process_without_logging_set_up_still_gets_the_lines(tmp_path):
    """A Ray worker: nobody configured the root logger (WARNING, no handler); the lines reach stderr."""
    import os
    import subprocess
    import sys

    code = "from foundation.progress import progress\nfor _ in progress(range(2), 'encode', unit='texts'): pass\n"
    env = dict(os.environ, **{P.ENV_INTERVAL: "0"})
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "foundation.progress: encode: 2/2 texts (100%)" in done.stderr
    assert "foundation.progress: encode: done 2/2 texts in 0s" in done.stderr


def test_one_slow_item_still_gets_a_line_every_interval(monkeypatch, caplog):
    """The heartbeat: nothing finishes for longer than the interval, a line comes anyway (real time)."""
    import time as real_time

    from foundation import progress as p

    monkeypatch.setattr(p, "on_tty", lambda: False)
    with caplog.at_level(logging.INFO, logger="foundation.progress"):
        report = p.Progress(10, desc="index build", unit="shards", interval=0.2)
        real_time.sleep(0.7)
        report.close()
    lines = [r.getMessage() for r in caplog.records if "index build" in r.getMessage()]
    assert len(lines) >= 2 and all("0/10 shards (0%)" in line and "(working on the next)" in line
                                   for line in lines[:-1]), lines
    assert lines[-1].startswith("index build: stopped at 0/10 shards in")
