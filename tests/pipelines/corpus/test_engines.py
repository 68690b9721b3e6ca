"""Engines, one logic: Beam and a 2-process local run give the in-process local engine's output on
the bundled corpus. Ray Data's engine is held to the same output where it has more to do: an
incremental build against a previous one (test_incremental.py), a worker killed mid-map
(test_engine_faults.py) and a 2-node cluster by address (tests/training/test_cluster.py); a whole
bundled build on Ray took 76-130 s of CI for code those tests already run."""

import pytest

from pipelines.corpus import run

from .conftest import corpus_config, outcome


@pytest.mark.parametrize("engine,sets", [
    ("beam", ["beam.options=--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing"]),
    ("local", ["local.workers=2"]),
])
def test_engine_equals_local(engine, sets, local_run, tmp_path):
    ref_dir, ref_manifest = local_run
    manifest = run(corpus_config(tmp_path, f"engine={engine}", *sets))
    assert manifest["extra"]["engine"] == engine
    assert manifest["counts"] == ref_manifest["counts"]
    assert manifest["dropped_by_reason"] == ref_manifest["dropped_by_reason"]
    assert outcome(tmp_path) == outcome(ref_dir)  # same kept ids/langs, same drop reasons and survivors
    assert manifest["config_hash"] == ref_manifest["config_hash"]  # the engine is not part of the result
