"""Suite-wide isolation: a test module that started Ray shuts it down when it ends, so the next
module starts from a clean machine (its own `ray.num_cpus`, its own worker environment)."""

import sys

import pytest


@pytest.fixture(autouse=True, scope="module")
def _ray_down_after_module():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
