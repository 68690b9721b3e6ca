"""Suite-wide set-up (tests/README.md says what is shared and why).

- ``local_ray``: one local Ray per test process (per pytest-xdist worker), started on first use and
  shut down when the session ends. A Ray start costs 5-10 s on the 2-core CI machine and every
  stage joins a running Ray (``init_ray`` is idempotent), so the Ray stages of all modules share
  it; a test that needs a Ray of its own (another ``num_cpus``, a cluster by address, a Ray started
  without some variable) shuts it down first, and the next ``local_ray`` starts it again.
- Ray Train's controller polls its workers every 2 s by default, so every Ray Train run ended ~5 s
  after its last step; the suite polls every 0.2 s (set before any Ray starts, so the controller
  and the ``mgte`` subprocesses inherit it).
- Under pytest-xdist each worker runs torch on one thread: two workers on two cores, not four
  threads fighting for them.
"""

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

RAY_CPUS = 2  # what the Ray stages of the suite ask for (ray.num_cpus=2; 2 Ray Train workers of 1 CPU)


@pytest.fixture
def local_ray():
    """The session's local Ray, started here with a clean fault plan if no test has it running."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        from foundation import faults
        from foundation.config import RayConfig
        from foundation.ray_init import init_ray

        plan = os.environ.pop(faults.ENV, None)  # Ray's workers must not inherit a test's fault plan
        try:
            init_ray(RayConfig(num_cpus=RAY_CPUS))
        finally:
            if plan is not None:
                os.environ[faults.ENV] = plan
    return ray


@pytest.fixture
def no_ray():
    """For a test that preempts its own process (the ``sigterm`` fault in this process): the session's
    Ray is stopped first. The driver of a local Ray does not survive a SIGTERM to its process: the
    next Ray call hung (seen with the suite's shared Ray). The next ``local_ray`` starts it again."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def pytest_sessionfinish(session, exitstatus):
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def pytest_collection_modifyitems(session, config, items):
    """Longest files first (``tests/durations.json``: seconds per file from a full run; files not
    listed, and ties, keep their order after them): the two xdist workers take whole files
    (``--dist loadfile``), and a long file started last would run alone at the end."""
    seconds = json.loads((Path(__file__).parent / "durations.json").read_text())
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0.0))  # stable within a file
