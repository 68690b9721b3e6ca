"""Where a data stage's tasks run: this process or local worker processes, Apache Beam, or Ray Data.

Every engine does one thing for every data stage: ``map(fn, items)`` calls ``fn(*item)`` once per
item, each call one task that writes its own files and marker last, so a task that is run again
(a retried bundle, a restarted worker) is idempotent. A stage picks its engine with
:func:`make_engine` from its config (``engine``, ``local``, ``beam``, ``ray``).

Retries are bounded everywhere (docs/reliability.md rows 3 and 29):

* a deterministic Python error inside a task fails at once: :func:`call_task` turns it into a
  one-line :class:`TaskFailed` naming the task's input file and the error; no engine retries it
  (Ray retries only system errors, Beam's DirectRunner retries a bundle a few times, bounded);
* a dead worker (killed, out of memory) is retried a bounded number of times: the local engine
  reruns the unfinished tasks once in a fresh pool; Ray reruns a task at most ``ray.max_retries``
  times (Ray Data's default is forever); then a one-line :class:`TaskFailed` names the files.
"""

from __future__ import annotations

import functools
import logging
import pickle
import shlex
from typing import Any, Callable, Sequence

from foundation.errors import MgteError, TaskFailed
from foundation.ray_init import apply_env, driver_env, init_ray

log = logging.getLogger("mgte.engines")
LOCAL_POOL_RETRIES = 1  # fresh pools after a worker died, for the tasks that did not finish


def task_label(item: Sequence[Any]) -> str:
    """The input a task reads, for messages: the ``path`` of a described input, or a path argument."""
    for arg in item:
        if isinstance(arg, dict) and isinstance(arg.get("path"), str):
            return arg["path"]
    for arg in item:
        if isinstance(arg, str) and ("/" in arg or "." in arg):
            return arg
        if hasattr(arg, "__fspath__"):
            return str(arg)
    return repr(item[0])[:80] if item else "<no arguments>"


def _labels(items: Sequence[Sequence[Any]], first: int = 3) -> str:
    names = [task_label(item) for item in items]
    more = f" and {len(names) - first} more" if len(names) > first else ""
    return ", ".join(names[:first]) + more


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def call_task(fn: Callable, item: Sequence[Any]):
    """Run one task; a Python error becomes a one-line :class:`TaskFailed` naming its input.

    Errors we raise ourselves (:class:`MgteError`: bad input, disk full) already name what failed
    and pass through unchanged."""
    try:
        return fn(*item)
    except MgteError:
        raise
    except Exception as exc:  # noqa: BLE001 - a deterministic task error: fail fast, named
        raise TaskFailed(f"task over {task_label(item)} failed: {_one_line(exc)}") from exc


def _ours(exc: BaseException) -> bool:
    return isinstance(exc, MgteError) and not type(exc).__module__.startswith("ray")


def _from_text(text: str) -> MgteError | None:
    """Our error as the text of a remote traceback (Ray Data and Beam keep only that)."""
    from foundation import errors

    for line in reversed(text.splitlines()):
        for name in ("TaskFailed", "BadInputError", "StageIOError", "StageConflict", "ConfigError"):
            for prefix in (f"foundation.errors.{name}: ", f"{name}: "):
                if line.strip().startswith(prefix) or f" {prefix}" in line:
                    return getattr(errors, name)(line.split(prefix, 1)[1].strip()[:500])
    return None


def find_task_failed(exc: BaseException) -> MgteError | None:
    """The :class:`MgteError` raised inside a task, out of the wrappers an engine put around it
    (chained, kept as ``cause``, or only as the text of the remote traceback)."""
    seen: set[int] = set()
    stack: list = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        for found in (cause, e):
            if isinstance(found, BaseException) and _ours(found):
                return found
        stack += [cause if isinstance(cause, BaseException) else None, e.__cause__, e.__context__]
    return _from_text(str(exc))


# ---- this process, or a pool of worker processes ------------------------------------------------
def _nothing(n: int = 1) -> None:
    """The default ``on_done`` of :meth:`map`: no progress report."""


class LocalEngine:
    """This process (``local.workers: 1``) or that many spawned worker processes."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers
        self.pool = None

    def _new_pool(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter per worker, safe whatever threads this process runs
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self):
        if self.workers > 1:
            self.pool = self._new_pool()
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
            self.pool = None
        return False

    def map(self, fn: Callable, items: list[tuple], on_done: Callable[[int], None] = _nothing) -> list:
        """``fn`` over ``items``: in this process (one worker), else in the pool, a lone task too (the
        driver holds no task's memory: pairs' one dedup part at 1M keys is ~0.7 GB, docs/scale.md)."""
        if self.pool is None:
            results = []
            for item in items:
                results.append(call_task(fn, item))
                on_done(1)
            return results
        from concurrent.futures import FIRST_EXCEPTION, wait
        from concurrent.futures.process import BrokenProcessPool

        results: dict[int, Any] = {}
        todo = list(range(len(items)))
        for attempt in range(LOCAL_POOL_RETRIES + 1):
            futures = {self.pool.submit(call_task, fn, items[i]): i for i in todo}
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            broken = False
            before = len(results)
            for fut in futures:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    results[futures[fut]] = fut.result()
            on_done(len(results) - before)
            for fut in done:
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken = True
                elif exc is not None:
                    for other in futures:
                        other.cancel()
                    raise exc
            if not broken:
                break
            todo = [i for i in todo if i not in results]
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            if attempt < LOCAL_POOL_RETRIES:
                log.warning("a local worker process died; rerunning %d unfinished task(s) in a fresh pool (%s)",
                            len(todo), _labels([items[i] for i in todo]))
                continue
            raise TaskFailed(f"a local worker process died {LOCAL_POOL_RETRIES + 1} times (killed or out of memory) "
                             f"while running tasks over {_labels([items[i] for i in todo])}; rerun to resume, "
                             f"or lower local.workers")
        return [results[i] for i in range(len(items))]


# ---- Apache Beam --------------------------------------------------------------------------------
MALLOC_ARENAS = "2"  # ours: glibc malloc arenas of a Beam driver and its SDK workers (MALLOC_ARENA_MAX wins)


def bound_malloc_arenas() -> None:
    """At most :data:`MALLOC_ARENAS` glibc malloc arenas in this process (those made from now on:
    ``mallopt``) and in the SDK worker processes it starts (``MALLOC_ARENA_MAX``, which a user's
    own value overrides). glibc gives a thread that allocates its own arena (up to 8 per core),
    and the DirectRunner's gRPC threads move every shuffle through the driver: freed, the memory
    stays in their arenas. The corpus dedup's driver kept ~70 MB more after each 1M-item slice
    pipeline (415 -> 552 MB after 2 slices, with ``gc.collect`` and ``malloc_trim``; no more
    Python objects) and held ~410 MB flat with two arenas (benchmarks/RESULTS.md, session 7).
    No-op off glibc."""
    import ctypes
    import os

    os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, int(os.environ["MALLOC_ARENA_MAX"]))  # -8: M_ARENA_MAX
    except (OSError, AttributeError, ValueError):
        pass


class BeamEngine:
    """Beam pipelines (DirectRunner unless ``beam.options`` names another runner)."""

    name = "beam"

    def __init__(self, options: str = "--runner=DirectRunner"):
        self.options = shlex.split(options)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def pipeline(self):
        import apache_beam as beam
        from apache_beam.options.pipeline_options import PipelineOptions

        bound_malloc_arenas()
        return beam.Pipeline(options=PipelineOptions(self.options))

    def run_steps(self, steps: Sequence[tuple[Callable[[int], Any], int]]) -> None:
        """One pipeline of chained steps (:func:`beam_task_pipeline`)."""
        with self.pipeline() as p:
            beam_task_pipeline(p, steps)

    def map(self, fn: Callable, items: list[tuple], on_done: Callable[[int], None] = _nothing) -> None:
        try:
            self.run_steps([(functools.partial(packed_task, fn, pack_items(items)), len(items))])
            on_done(len(items))  # one pipeline: every task done at once
        except MgteError:
            raise
        except Exception as exc:  # noqa: BLE001 - Beam wraps the task's error; name it in one line
            raise beam_error(exc, items) from exc


def beam_task_pipeline(p, steps: Sequence[tuple[Callable[[int], Any], int]]) -> None:
    """One pipeline of steps: ``task(i)`` for each ``i < n`` of each ``(task, n)``, spread over the
    workers (``Create`` reshuffles its elements), each step after the previous one (its results as a
    side input: the runner computes a side input whole before the step that reads it).

    The elements are task numbers only: the tasks' arguments travel once, inside the step's function
    (:func:`pack_items`). The DirectRunner's driver held ~14x the bytes of the elements it moved (a
    corpus task's arguments, its config twice, are 65 KB: 400 of them took the driver from 285 to
    576 MB, benchmarks/RESULTS.md session 9)."""
    import apache_beam as beam

    done = None
    for i, (task, n) in enumerate(steps):
        parts = p | f"Parts{i}" >> beam.Create(list(range(n)))
        done = (parts | f"Step{i}" >> beam.Map(task) if done is None
                else parts | f"Step{i}" >> beam.Map(_after, beam.pvalue.AsList(done), task))


def _after(part: int, before: list, task) -> Any:
    """``task(part)``, once the step before (``before``: its results) is done."""
    return task(part)


def pack_items(items: Sequence[tuple]) -> bytes:
    """The tasks' arguments pickled together: what they share (a stage's config and output, the
    same objects in every item) is stored once, not once a task."""
    return pickle.dumps(list(items), protocol=pickle.HIGHEST_PROTOCOL)


_UNPACKED: list = [None, None]  # the last packed bytes this process read, and its items


def unpack_items(packed: bytes) -> list[tuple]:
    """:func:`pack_items`'s items; a worker unpickles them once while the same bytes object comes back."""
    held, items = _UNPACKED
    if held is not packed:
        items = pickle.loads(packed)
        _UNPACKED[:] = [packed, items]
    return items


def packed_task(fn: Callable, packed: bytes, i: int) -> int:
    """Task ``i`` of :func:`pack_items`'s ``packed``: ``call_task(fn, items[i])``; returns ``i``."""
    call_task(fn, unpack_items(packed)[i])
    return i


def beam_error(exc: BaseException, items: list[tuple]) -> MgteError:
    """The task's own error out of Beam's wrapping (which may keep it only as text)."""
    return find_task_failed(exc) or TaskFailed(f"Beam pipeline failed over {_labels(items)}: {_one_line(exc)}")


# ---- Ray Data -----------------------------------------------------------------------------------
class RayEngine:
    """Ray Data on a local ``ray.init()`` or on the cluster at ``ray.address``; each task is one
    Ray task (one block per item), rerun at most ``ray.max_retries`` times when its worker dies."""

    name = "ray"

    def __init__(self, cfg):
        self.cfg = cfg
        self.max_retries = getattr(cfg, "max_retries", 2)
        self.started = False

    @property
    def retry_args(self) -> dict:
        """Ray remote args for any Ray Data operation of a stage: bounded retries."""
        return {"max_retries": self.max_retries}

    def __enter__(self):
        import ray


        self.started = init_ray(self.cfg)
        ray.data.DataContext.get_current().enable_progress_bars = False
        return self

    def __exit__(self, *exc):
        import ray

        if self.started:
            ray.shutdown()
            self.started = False
        return False

    def map(self, fn: Callable, items: list[tuple], on_done: Callable[[int], None] = _nothing) -> list:
        import ray

        if not items:
            return []
        results: dict[int, Any] = {}
        ds = ray.data.from_items([{"i": i} for i in range(len(items))], override_num_blocks=len(items))
        ds = ds.map(functools.partial(_ray_task, fn, driver_env(), pack_items(items)), num_cpus=1, **self.retry_args)
        try:
            for row in ds.iter_rows():
                results[row["i"]] = row["result"]
                on_done(1)
        except Exception as exc:  # noqa: BLE001 - a Ray error: name the task in one line
            inner = find_task_failed(exc)
            if inner is not None:
                raise inner from None
            todo = [items[i] for i in range(len(items)) if i not in results]
            raise TaskFailed(f"a Ray task failed after {self.max_retries} retries ({_one_line(exc)[:200]}); "
                             f"unfinished tasks over {_labels(todo)}; rerun to resume") from None
        return [results.get(i) for i in range(len(items))]


def _ray_task(fn: Callable, env: dict, packed: bytes, row: dict) -> dict:
    apply_env(env)  # the driver's fault hook / offline / thread settings, whoever started Ray
    result = call_task(fn, unpack_items(packed)[row["i"]])
    return {"i": row["i"], "result": result.get("task") if isinstance(result, dict) else None}


ENGINES = {"local": LocalEngine, "beam": BeamEngine, "ray": RayEngine}


def make_engine(cfg) -> LocalEngine | BeamEngine | RayEngine:
    """The engine a stage config names (``engine``), built from its ``local``/``beam``/``ray`` part."""
    if cfg.engine == "local":
        return LocalEngine(getattr(getattr(cfg, "local", None), "workers", 1))
    if cfg.engine == "beam":
        return BeamEngine(cfg.beam.options)
    if cfg.engine == "ray":
        return RayEngine(cfg.ray)
    raise ValueError(f"unknown engine {cfg.engine!r} (known: {sorted(ENGINES)})")
