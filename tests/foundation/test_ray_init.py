"""Joining a Ray cluster by address: unreachable addresses and Ray's token auth give one-line errors;
a token given by RAY_AUTH_TOKEN(_PATH) is sent without RAY_AUTH_MODE being set by hand.

The cluster is a real `ray start --head --block` in its own process group, stopped by that group
(never `ray stop`, which would stop every Ray on the machine)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from foundation.config import RayConfig
from foundation.ray_init import RayConnectError, _gcs_endpoint, init_ray

TOKEN = "0123456789abcdef" * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


@pytest.fixture(autouse=True)
def _no_local_ray():
    """These tests start or join Ray themselves: the session's local Ray (tests/conftest.py) is stopped
    first (``init_ray`` joins a running Ray whatever its address)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A one-CPU head with token authentication on; yields its address."""
    port = _free_port()
    env = {**_clean_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths under it must stay short (107 bytes)
    ports = [f"--{flag}={_free_port()}" for flag in (  # Ray's fixed defaults may be taken by another Ray here
        "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port")]
    proc = subprocess.Popen(["ray", "start", "--head", "--block", f"--port={port}", "--num-cpus=1", *ports,
                             "--include-dashboard=false", "--node-ip-address=127.0.0.1", f"--temp-dir={tmp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("the test's Ray head did not start")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)  # `ray start --block` may not exit on SIGTERM: the group is killed
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _client(address: str, env: dict, tmp_path) -> subprocess.CompletedProcess:
    """Join the cluster in a fresh process (Ray reads its auth mode once per process)."""
    code = textwrap.dedent(f"""
        import ray
        from foundation.config import RayConfig
        from foundation.errors import MgteError
        from foundation.ray_init import init_ray
        try:
            init_ray(RayConfig(address={address!r}))
        except MgteError as exc:
            print("ERROR", exc)
        else:
            print("CPUS", ray.cluster_resources().get("CPU"))
            ray.shutdown()
        """)
    return subprocess.run([sys.executable, "-c", code], env={**env, "HOME": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120, cwd=os.getcwd())


def test_unreachable_address_is_one_line_in_seconds():
    address = f"127.0.0.1:{_free_port()}"
    t0 = time.time()
    with pytest.raises(RayConnectError, match=f"cannot reach the Ray cluster at {address}"):
        init_ray(RayConfig(address=address))
    assert time.time() - t0 < 10


def test_address_forms():
    assert _gcs_endpoint("ray://head:10001") == ("head", 10001)
    assert _gcs_endpoint("ray://head") == ("head", 10001)
    assert _gcs_endpoint("10.0.0.1:6379") == ("10.0.0.1", 6379)
    assert _gcs_endpoint("auto") is None
    with pytest.raises(RayConnectError, match="expected HOST:PORT"):
        _gcs_endpoint("head:port")


def test_token_auth(token_cluster, tmp_path):
    env = _clean_env()
    wrong = _client(token_cluster, {**env, "RAY_AUTH_TOKEN": "f" * 64}, tmp_path)
    assert "token from RAY_AUTH_TOKEN was refused" in wrong.stdout, wrong.stdout[-2000:]
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    right = _client(token_cluster, {**env, "RAY_AUTH_TOKEN_PATH": str(token_file)}, tmp_path)
    assert "CPUS 1.0" in right.stdout, (right.stdout + right.stderr)[-2000:]


OWN_RAY = """
import os, sys, ray
from foundation.config import RayConfig
from foundation.ray_init import init_ray
record = os.path.join(os.environ["RAY_TMPDIR"], "ray", "ray_current_cluster")
os.makedirs(os.path.dirname(record), exist_ok=True)
for left in sys.argv[1:]:  # what a past `ray start` left: a live head's address, then a dead one
    with open(record, "w") as fh:
        fh.write(left)
    init_ray(RayConfig(num_cpus=3))
    print("CPUS", ray.cluster_resources().get("CPU"), flush=True)
    ray.shutdown()
"""


def test_no_address_starts_our_own_ray_whatever_ray_start_left(token_cluster):
    """Without ray.address, mgte never joins the cluster recorded in RAY_TMPDIR/ray/ray_current_cluster
    (Ray's ``ray.init()`` would, and then refuses ``num_cpus``): live head beside it, or a stale file."""
    short = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    env = {**_clean_env(), "RAY_TMPDIR": short}
    done = subprocess.run([sys.executable, "-c", OWN_RAY, token_cluster, f"127.0.0.1:{_free_port()}"], env=env,
                          capture_output=True, text=True, timeout=180, cwd=os.getcwd())
    assert done.stdout.split() == ["CPUS", "3.0", "CPUS", "3.0"], (done.stdout + done.stderr)[-2000:]
