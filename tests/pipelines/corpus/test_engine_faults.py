"""A worker killed mid-map (docs/reliability.md row 3): the task is rerun a bounded number of times and
every record is written exactly once (the output equals an uninterrupted local run)."""

import pyarrow.parquet as pq
import pytest

from pipelines.corpus import run

from .conftest import corpus_config, outcome
from .test_inputs import make_inputs, reference


@pytest.mark.parametrize("sets", [["engine=ray", "ray.num_cpus=2", "ray.max_retries=2"],
                                  ["engine=local", "local.workers=2"]])
def test_worker_killed_mid_map_finishes_with_rows_exactly_once(sets, tmp_path, monkeypatch, local_ray):
    src = make_inputs(tmp_path)
    ref = reference(src, tmp_path / "ref")
    monkeypatch.setenv("MGTE_FAULT", f"point=after_records,count=5,action=exit137,once={tmp_path / 'killed'}")
    manifest = run(corpus_config(tmp_path / "out", *sets, inputs=(str(src),)))
    assert (tmp_path / "killed").is_file()  # a worker did die mid-task
    assert outcome(tmp_path / "out") == ref
    ids = pq.read_table(tmp_path / "out" / "data", columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == manifest["counts"]["kept"]
