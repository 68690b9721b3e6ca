"""A real 2-node Ray cluster on this machine (two `ray start --block`, 1 CPU each, token auth on):
the corpus stage on Ray by address equals the local run; `train mlm` with 2 workers (one per
node) loses the second node mid-run, resumes from the last checkpoint when the node is back
(`max_failures=1`), says so on the driver's output (the rank lost, its error, the step resumed
from), and ends with the losses of the single-node run (docs/reliability.md row 7 across nodes). Stages are started as users start them (the `mgte` CLI); the cluster is stopped by the
process groups this test started, never by `ray stop`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
TOKEN = "fedcba9876543210" * 4
MLM_SETS = [
    "model.overrides={hidden_size: 32, num_attention_heads: 2, intermediate_size: 64}",
    "model.hidden_dropout_prob=0.0",
    "data.max_sequences=4", "data.max_tokens=256", "data.micro_tokens=128", "data.loss_chunk=64",
    "loop.max_steps=6", "loop.log_every=1", "loop.ckpt_every=2", "loop.optim.lr=0.01",
    "loop.progress=false", "loop.tensorboard=false",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**more) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MGTE_FAULT"}
    return {**env, "HF_HUB_OFFLINE": "1", "RAY_AUTH_TOKEN": TOKEN, **more}


class Cluster:
    def __init__(self, tmp: Path):
        self.port, self.tmp, self.procs = _free_port(), tmp, {}
        self.address = f"127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        # every port of the node chosen free: Ray's fixed defaults (the dashboard agent's 52365, ...)
        # may be held by another Ray on this machine (the suite's local Ray, a parallel test worker)
        ports = [f"--{flag}={_free_port()}" for flag in (
            "node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
            "metrics-export-port", "runtime-env-agent-port")]
        self.procs[name] = subprocess.Popen(
            ["ray", "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", *ports, *args],
            env=_env(RAY_AUTH_MODE="token"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def start_head(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--temp-dir={self.tmp}"])
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > deadline or self.procs["head"].poll() is not None:
                    raise RuntimeError("the test cluster's head did not start")
                time.sleep(0.5)

    def start_node(self) -> None:
        self._start("node", [f"--address={self.address}"])
        self.wait_for_nodes(2)

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        code = ("import ray; ray.init(address=%r, log_to_driver=False); "
                "print(sum(1 for x in ray.nodes() if x['Alive'])); ray.shutdown()" % self.address)
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = subprocess.run([sys.executable, "-c", code], env=_env(RAY_AUTH_MODE="token"), capture_output=True,
                                 text=True, timeout=120)
            if out.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            time.sleep(1)
        raise RuntimeError(f"the test cluster never had {n} live nodes")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Ray's unix sockets live under the head's temp dir, and a socket path over 107 bytes fails: a pytest
    # temp dir under an xdist worker (.../popen-gw0/ray0/session_<time>_<pid>/sockets/plasma_store.1) is too
    # long for the second node, so the cluster's temp dir is a short one of its own
    short = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    c = Cluster(short)
    try:
        c.start_head()
        c.start_node()
        yield c
    finally:
        c.stop()
        shutil.rmtree(short, ignore_errors=True)


def mgte(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dags.cli", *args], cwd=REPO, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def _kept_ids(out: Path) -> list[str]:
    return sorted(i for f in sorted((out / "data").glob("*.parquet")) for i in pq.read_table(f, columns=["id"])["id"].to_pylist())


@pytest.mark.slow
def test_corpus_on_the_cluster_equals_the_local_run(cluster, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("07-web-mixed.jsonl",):
        (raw / name).write_bytes((REPO / "data/corpus/raw" / name).read_bytes())
    config = str(REPO / "dags/configs/corpus/tiny.yaml")
    mgte("corpus", "--config", config, "--input", str(raw), "--output", str(tmp_path / "local"),
         "--set", "engine=local", "--set", "progress=false")
    mgte("corpus", "--config", config, "--input", str(raw), "--output", str(tmp_path / "cluster"),
         "--set", "engine=ray", "--set", f"ray.address={cluster.address}", "--set", "progress=false")
    local, remote = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "cluster"))
    assert remote["counts"] == local["counts"] and remote["dropped_by_reason"] == local["dropped_by_reason"]
    assert _kept_ids(tmp_path / "cluster") == _kept_ids(tmp_path / "local")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from tests.pipelines.test_mlm_shards import clean_doc_rows, write_clean_docs

    tmp = tmp_path_factory.mktemp("shards")
    files = write_clean_docs(tmp / "docs", [clean_doc_rows(40, long_every=9), clean_doc_rows(40, start=40)])
    mgte("mlm-shards", "--config", str(REPO / "dags/configs/mlm-shards/tiny.yaml"), "--input", *map(str, files),
         "--output", str(tmp / "out"), "--set", "max_len=64", "--set", "progress=false")
    return tmp / "out"


def _losses(out: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(out / "metrics.jsonl")}


@pytest.mark.slow
def test_train_mlm_across_two_nodes_survives_losing_one(cluster, shards, tmp_path):
    config = str(REPO / "dags/configs/mlm/tiny.yaml")
    sets = [x for s in MLM_SETS for x in ("--set", s)]
    ref = tmp_path / "ref"
    mgte("train", "mlm", "--config", config, "--input", str(shards), "--output", str(ref), *sets,
         "--set", "engine=local", "--set", "scaling.num_workers=1")

    out, paused = tmp_path / "cluster", tmp_path / "paused"
    env = _env(MGTE_FAULT=f"point=train_step,count=4,action=pause,seconds=90,once={paused}",
               MGTE_PROGRESS_INTERVAL_S="0")
    run = subprocess.Popen(
        [sys.executable, "-m", "dags.cli", "train", "mlm", "--config", config, "--input", str(shards),
         "--output", str(out), *sets, "--set", "engine=ray", "--set", f"ray.address={cluster.address}",
         "--set", "scaling.num_workers=2", "--set", "scaling.cpus_per_worker=1", "--set", "scaling.max_failures=1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not paused.exists():  # a worker reached step 4 (checkpoint step-2 is written)
            assert run.poll() is None and time.time() < deadline, "training ended or hung before step 4"
            time.sleep(0.5)
        cluster.kill("node")  # the second node dies mid-run
        time.sleep(5)
        cluster.start_node()  # capacity returns
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["extra"]["num_workers"] == 2
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps[0] == 1 and steps[-1] == 6 and steps.count(1) == 1  # resumed, never restarted from 0
    assert any(later <= earlier for earlier, later in zip(steps, steps[1:]))  # some steps were redone
    resumed = int(re.search(r"Ray Train attempt 2: resumed from step (\d+) after ranks? [\d, ]+ failed: \w+",
                            output).group(1))
    assert resumed in (2, 4) and steps.count(resumed + 1) == 2, output[-3000:]  # told where it really resumed
    # rank 0's progress lines (a Ray worker's stderr) reach the driver's log: a run under cron or `> log`
    # says how far it is (issue 25, item 5)
    assert re.search(r"\(RayTrainWorker pid=\d+\)\S* .*train: [1-6]/6 steps \(\d+%\), [\d.]+/s, ~\S+ left", output), \
        output[-3000:]
    got, want = _losses(out), _losses(ref)
    assert sorted(got) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4, abs=1e-4), step
