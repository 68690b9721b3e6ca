"""Every training test runs offline (models come from the repository or a package) and starts
with no fault planned and the fault counters at zero."""

import pytest

from foundation import faults


@pytest.fixture(autouse=True)
def _offline_and_no_faults(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(faults.ENV, raising=False)
    faults._calls.clear()
    yield
    faults._calls.clear()
