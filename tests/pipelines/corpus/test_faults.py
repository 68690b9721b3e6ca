"""docs/reliability.md rows 1, 2, 15, 22: killed or failing runs leave no half output and rerun to the same result."""

import pyarrow.parquet as pq
import pytest

from .conftest import RAW, TINY, cli, outcome

FILES = [str(RAW / name) for name in ("01-udhr-a.jsonl", "07-web-mixed.jsonl", "10-malformed.jsonl")]


def mgte_corpus(out, env=None, check=True):
    return cli("corpus", "--config", str(TINY), "--input", *FILES, "--output", str(out), "--set", "engine=local",
               env=env, check=check)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    mgte_corpus(out)
    return outcome(out), pq.read_table(out / "stats" / "lang_stats.parquet").to_pylist()


@pytest.mark.parametrize("fault", [
    "point=after_records,count=700,action=exit137",  # mid-way through the second file
    "point=before_marker,count=2,action=exit137",  # data renamed, marker not written
    "point=before_rename,count=5,action=exit137",
    "point=after_records,count=800,action=sigterm",
])
def test_kill_and_rerun_equals_uninterrupted(fault, reference, tmp_path):
    proc = mgte_corpus(tmp_path, env={"MGTE_FAULT": fault}, check=False)
    assert proc.returncode != 0
    assert not (tmp_path / "_SUCCESS").exists()
    finished = {p.stem for p in (tmp_path / "_tasks").glob("*.json")} if (tmp_path / "_tasks").exists() else set()
    assert not any(name.startswith("write-10-malformed") for name in finished)
    mgte_corpus(tmp_path)  # rerun: only unfinished tasks are redone
    assert outcome(tmp_path) == reference[0]
    assert pq.read_table(tmp_path / "stats" / "lang_stats.parquet").to_pylist() == reference[1]
    assert not list(tmp_path.rglob("*.tmp"))


def test_disk_full_fails_naming_the_path_then_rerun_completes(reference, tmp_path):
    proc = mgte_corpus(tmp_path, env={"MGTE_FAULT": "point=write_parquet,count=2,action=enospc"}, check=False)
    assert proc.returncode == 1  # infrastructure (CONTRACT.md "Errors"): exit 1, one line
    assert "No space left on device" in proc.stderr and str(tmp_path) in proc.stderr
    assert not (tmp_path / "_SUCCESS").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    mgte_corpus(tmp_path)
    assert outcome(tmp_path) == reference[0]


def test_unknown_config_key_fails_before_running(tmp_path):
    proc = cli("corpus", "--config", str(TINY), "--input", FILES[0], "--output", str(tmp_path / "o"),
               "--set", "dedup.bandz=3", check=False)
    assert proc.returncode == 2
    assert "unknown key 'dedup.bandz'" in proc.stderr and "tiny.yaml" in proc.stderr
    assert not (tmp_path / "o").exists()
