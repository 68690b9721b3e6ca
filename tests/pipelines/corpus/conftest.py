import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from foundation.config import load_config
from pipelines.corpus import Config, run

ROOT = Path(__file__).resolve().parents[3]
RAW = ROOT / "data" / "corpus" / "raw"
TRUTH = ROOT / "data" / "corpus" / "truth.jsonl"
TINY = ROOT / "dags" / "configs" / "corpus" / "tiny.yaml"


def corpus_config(output, *sets, inputs=(str(RAW),)):
    overrides = [f"output={output}", "input=[" + ", ".join(f"'{p}'" for p in inputs) + "]", *sets]
    return load_config(Config, TINY, overrides)


def rows(sub_dir: Path, columns: list[str]) -> list[dict]:
    """The rows of a table directory; none when no task wrote one (dropped/ and quarantine/ files
    exist only where a task has such rows)."""
    return pq.read_table(sub_dir).select(columns).to_pylist() if any(sub_dir.rglob("*.parquet")) else []


def outcome(out_dir) -> dict:
    """(file name, line) -> (fate, lang, reason, duplicate_of) for every record read."""
    out_dir = Path(out_dir)
    got = {}
    for r in rows(out_dir / "data", ["path", "line", "lang", "id"]):
        got[(Path(r["path"]).name, r["line"])] = ("kept", r["lang"], None, None)
    for r in rows(out_dir / "dropped", ["path", "line", "lang", "reason", "duplicate_of"]):
        got[(Path(r["path"]).name, r["line"])] = ("dropped", r["lang"], r["reason"], r["duplicate_of"])
    for r in rows(out_dir / "quarantine", ["path", "line", "error"]):
        got[(Path(r["path"]).name, r["line"])] = ("quarantined", None, r["error"], None)
    return got


def cli(*args, env=None, check=True):
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "dags.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"mgte {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def truth() -> list[dict]:
    return [json.loads(line) for line in TRUTH.read_text().splitlines()]


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """The reference: the tiny config on the whole bundled corpus, local engine."""
    out = tmp_path_factory.mktemp("corpus-local")
    manifest = run(corpus_config(out, "engine=local"))
    return out, manifest
