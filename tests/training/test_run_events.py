"""The driver's account of Ray Train retries (training/run_events.py), without Ray: the events of
an attempt, a failure, a lost worker and a torn line become the lines the driver logs and the
manifest's retries. The same through a real Ray Train restart: tests/training/mlm/test_mlm.py."""

import logging

from training.run_events import Tail, append_event, one_line, read_retries


def test_tail_tells_each_attempt_the_failed_rank_and_the_step_resumed_from(tmp_path):
    path = tmp_path / "_events.jsonl"
    append_event(path, "launch", run="old", max_failures=1)
    append_event(path, "started", resumed_from=None)  # an earlier launch: neither told nor counted
    told: list[tuple[int, str]] = []
    with Tail(path, every=60, emit=lambda level, line: told.append((level, line))) as tail:
        append_event(path, "launch", run="mlm-x", max_failures=3)
        append_event(path, "started", resumed_from=None)
        append_event(path, "failed", errors={"0": "RuntimeError: Connection closed by peer",
                                             "1": "ActorDiedError: the worker process died"}, lost=["1"])
        append_event(path, "failed", errors={"1": "ActorDiedError: the worker process died"}, lost=["1"])  # again
        tail.poll()
        with path.open("a") as fh:
            fh.write('{"event": "started", "resum')  # still being written: waits for the next poll
        tail.poll()
        with path.open("a") as fh:
            fh.write('ed_from": 4}\n')
        append_event(path, "started", resumed_from=6)  # no error recorded (a node lost, or Ray Train V1)
        append_event(path, "failed", errors={"0": "RuntimeError: gloo", "1": "OSError: [Errno 28] disk full"})
        append_event(path, "started", resumed_from=8)
    assert told == [
        (logging.INFO, "Ray Train attempt 1: started from step 0"),
        (logging.WARNING, "Ray Train attempt 1: rank 1 failed: ActorDiedError: the worker process died "
                          "(also rank 0: RuntimeError: Connection closed by peer)"),
        (logging.WARNING, "Ray Train attempt 2: resumed from step 4 after rank 1 failed: ActorDiedError: the worker "
                          "process died (also rank 0: RuntimeError: Connection closed by peer)"),
        (logging.WARNING, "Ray Train attempt 3: resumed from step 6 after a worker was lost (no error recorded)"),
        (logging.WARNING, "Ray Train attempt 3: ranks 0, 1 failed: rank 0: RuntimeError: gloo; rank 1: OSError: "
                          "[Errno 28] disk full"),
        (logging.WARNING, "Ray Train attempt 4: resumed from step 8 after ranks 0, 1 failed: rank 0: RuntimeError: "
                          "gloo; rank 1: OSError: [Errno 28] disk full"),
    ]
    assert read_retries(path) == [
        {"attempt": 2, "resumed_from": 4, "lost": ["1"],
         "failed": {"0": "RuntimeError: Connection closed by peer", "1": "ActorDiedError: the worker process died"}},
        {"attempt": 3, "resumed_from": 6, "failed": {}, "lost": []},
        {"attempt": 4, "resumed_from": 8, "failed": {"0": "RuntimeError: gloo", "1": "OSError: [Errno 28] disk full"},
         "lost": []},
    ]
    assert read_retries(tmp_path / "none.jsonl") == []


def test_one_line_is_the_innermost_error_cut_to_the_limit():
    try:
        try:
            raise OSError("first line\nNo space left on device")
        except OSError as inner:
            raise RuntimeError("wrapper") from inner
    except RuntimeError as exc:
        assert one_line(exc) == "OSError: No space left on device"
    assert one_line(ValueError("x" * 300), 20) == "ValueError: xxxxx..."
