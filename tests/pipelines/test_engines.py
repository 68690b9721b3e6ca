"""The shared engines (docs/reliability.md rows 3, 29): bounded retries, a deterministic error fails fast
naming the task's input in one line, a dead worker is rerun a bounded number of times."""

import time

import pytest

from foundation.config import RayConfig
from foundation.errors import TaskFailed
from foundation.faults import fault_point
from pipelines.engines import LocalEngine, RayEngine, call_task, task_label


def test_task_label_and_a_python_error_becomes_one_line_task_failed():
    assert task_label(({"path": "/in/a.jsonl", "size": 3}, "cfg")) == "/in/a.jsonl"
    with pytest.raises(TaskFailed, match=r"^task over b\.jsonl failed: ValueError: invalid literal") as err:
        call_task(int, ("b.jsonl",))
    assert "\n" not in str(err.value)
    with LocalEngine(1) as engine:
        assert engine.map(int, [("1",), ("2",)]) == [1, 2]
        with pytest.raises(TaskFailed, match="x.jsonl"):
            engine.map(int, [("1",), ("x.jsonl",)])


def test_a_local_pool_runs_a_lone_task_too():
    """With a pool, even a phase's only task runs in a worker: the driver's memory holds no task."""
    import os

    with LocalEngine(2) as engine:
        assert engine.map(os.getpid, [()]) != [os.getpid()]
    with LocalEngine(1) as engine:
        assert engine.map(os.getpid, [()]) == [os.getpid()]


def test_local_pool_reruns_the_tasks_of_a_dead_worker_once(tmp_path, monkeypatch):
    monkeypatch.setenv("MGTE_FAULT", f"point=t,action=exit137,once={tmp_path / 'once'}")
    items = [("t", f"f{i}.jsonl") for i in range(4)]
    with LocalEngine(2) as engine:
        assert engine.map(fault_point, items) == [False] * 4  # one worker died, its tasks were rerun
    assert (tmp_path / "once").is_file()


def test_local_pool_worker_dying_every_time_is_one_line(monkeypatch):
    monkeypatch.setenv("MGTE_FAULT", "point=t,action=exit137")  # the first task of every worker dies
    t0 = time.monotonic()
    with pytest.raises(TaskFailed, match=r"worker process died 2 times .* tasks over f\d.jsonl") as err:
        with LocalEngine(2) as engine:
            engine.map(fault_point, [("t", f"f{i}.jsonl") for i in range(3)])
    assert "\n" not in str(err.value) and time.monotonic() - t0 < 120


@pytest.fixture
def ray_crashing(monkeypatch):
    import ray

    if ray.is_initialized():  # a Ray of an earlier test: this one starts its own with 2 CPUs
        ray.shutdown()
    monkeypatch.setenv("MGTE_FAULT", "point=t,action=exit137")  # every worker dies at its first task
    with RayEngine(RayConfig(num_cpus=2, max_retries=1)) as engine:
        yield engine


def test_ray_deterministic_errors_fail_fast_and_crashes_after_bounded_retries(ray_crashing):
    t0 = time.monotonic()
    with pytest.raises(TaskFailed, match=r"^task over bad\.jsonl failed: ValueError") as err:
        ray_crashing.map(int, [("1",), ("bad.jsonl",)])
    assert "\n" not in str(err.value)
    with pytest.raises(TaskFailed, match=r"Ray task failed after 1 retries .* over crash\.jsonl") as err:
        ray_crashing.map(fault_point, [("t", "crash.jsonl")])
    assert "\n" not in str(err.value) and time.monotonic() - t0 < 180


def _env_probe(name: str) -> dict:
    import os

    return {"task": f"{name}:{os.environ.get('MGTE_FAULT')}"}


def test_ray_tasks_take_the_drivers_env_even_when_ray_was_started_without_it(monkeypatch):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("MGTE_FAULT", raising=False)
    with RayEngine(RayConfig(num_cpus=2)) as engine:  # Ray starts here without MGTE_FAULT
        monkeypatch.setenv("MGTE_FAULT", "point=nowhere")  # a later stage of the same process sets it
        assert engine.map(_env_probe, [("a",), ("b",)]) == ["a:point=nowhere", "b:point=nowhere"]


def test_a_beam_engine_bounds_malloc_arenas_in_its_workers_unless_the_user_set_them(monkeypatch, tmp_path):
    """The DirectRunner's driver kept ~70 MB more after each 1M-item dedup slice in glibc's
    per-thread arenas (benchmarks/RESULTS.md, session 7): a Beam engine's process and the SDK
    worker processes it starts run with MALLOC_ARENA_MAX=2 (the driver through mallopt), unless the
    user set another value."""
    import os
    import pathlib

    import apache_beam as beam

    from pipelines.engines import BeamEngine

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    with BeamEngine("--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=multi_processing") as engine:
        with engine.pipeline() as p:
            _ = (p | beam.Create([str(tmp_path)])
                 | beam.Map(lambda d: pathlib.Path(d, str(os.getpid())).write_text(os.environ.get("MALLOC_ARENA_MAX", "-"))))
    seen = {f.name: f.read_text() for f in tmp_path.iterdir()}
    assert list(seen.values()) == ["2"] and str(os.getpid()) not in seen  # read in a worker process
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    calls = []  # the driver's own arenas: mallopt(M_ARENA_MAX = -8, n) in this process

    class Libc:
        def __init__(self, name):
            assert name == "libc.so.6"

        def mallopt(self, option, value):
            calls.append((option, value))

    monkeypatch.setattr("ctypes.CDLL", Libc)
    with BeamEngine() as engine:
        engine.pipeline()
        assert os.environ["MALLOC_ARENA_MAX"] == "4"
    assert calls == [(-8, 4)]


def _write_index(root: str, cfg: dict, i: int) -> dict:
    import pathlib

    pathlib.Path(root, str(i)).write_text(str(len(cfg["rows"])))
    return {"task": i}


def test_a_beam_map_moves_task_numbers_and_each_shared_argument_once(monkeypatch, tmp_path):
    """The DirectRunner's driver held ~14x the bytes of the elements a pipeline moved: 400 corpus
    tasks, each carrying its 65 KB config, took it from 285 to 576 MB (benchmarks/RESULTS.md,
    session 9). The elements are the task numbers; the arguments travel pickled once, inside the
    step's function, and what the tasks share (one config object) is stored once."""
    import pickle

    import apache_beam as beam

    from pipelines import engines

    cfg = {"rows": [f"threshold {j}" for j in range(2000)]}  # ~30 KB, the same object in every task
    items = [(str(tmp_path), cfg, i) for i in range(40)]
    created, payload = [], []
    real = engines.beam_task_pipeline

    class Creates(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            if isinstance(node.transform, beam.Create):
                created.extend(node.transform.values)

    def visited(p, steps):
        real(p, steps)
        payload.extend(len(pickle.dumps(task)) for task, _ in steps)
        p.visit(Creates())

    monkeypatch.setattr(engines, "beam_task_pipeline", visited)
    with engines.BeamEngine("--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing") as e:
        e.map(_write_index, items)
    assert created == list(range(40))  # task numbers, nothing else
    assert payload and payload[0] < 2 * len(pickle.dumps(items[0]))  # the config once, not 40 times
    ran = {f.name: f.read_text() for f in tmp_path.iterdir()}
    assert sorted(ran, key=int) == [str(i) for i in range(40)]  # every task ran once, with its arguments
    assert set(ran.values()) == {"2000"}


def test_a_ray_map_moves_task_numbers_and_returns_each_tasks_result(monkeypatch, tmp_path):
    """Ray's blocks hold the task numbers; the arguments travel packed once in the map's function."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    rows, real = [], ray.data.from_items

    def from_items(items, **kw):
        rows.extend(items)
        return real(items, **kw)

    monkeypatch.setattr(ray.data, "from_items", from_items)
    cfg = {"rows": [f"threshold {j}" for j in range(2000)]}
    with RayEngine(RayConfig(num_cpus=2)) as engine:
        got = engine.map(_write_index, [(str(tmp_path), cfg, i) for i in range(6)])
    assert rows == [{"i": i} for i in range(6)]
    assert got == list(range(6))
    assert sorted(f.read_text() for f in tmp_path.iterdir()) == ["2000"] * 6
