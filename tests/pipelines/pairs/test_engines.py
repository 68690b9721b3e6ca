"""One logic on every engine: Beam, Ray and a 2-process local run give the in-process local
engine's output, row for row, on inputs with duplicates across files, drops and a bad record."""

import pytest

from pipelines import pairs

from .conftest import config, outcome, small_inputs


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    inputs = small_inputs(tmp)
    manifest = pairs.run(config(tmp, inputs, "engine=local", "lang.min_chars=30", "reader.error_budget=0.2"))
    return inputs, tmp / "out", manifest


@pytest.mark.parametrize("engine,sets", [
    ("beam", []),  # FnApiRunner (conftest.BEAM)
    ("ray", ["ray.num_cpus=2"]),
    ("local", ["local.workers=2"]),
])
def test_engine_equals_local(engine, sets, local_run, tmp_path, local_ray):
    inputs, ref_dir, ref_manifest = local_run
    out = ref_dir.parent / f"out-{engine}"  # beside the reference: the inputs are recorded alike (relative)
    manifest = pairs.run(config(tmp_path, inputs, f"engine={engine}", *sets, "lang.min_chars=30",
                                "reader.error_budget=0.2", output=str(out)))
    assert manifest["extra"]["engine"] == engine
    assert ref_manifest["counts"] == {"input": 18, "kept": 14, "dropped": 3, "quarantined": 1}
    assert ref_manifest["dropped_by_reason"] == {"empty_positive": 1, "exact_duplicate": 2}
    assert outcome(out) == outcome(ref_dir)
    rows = lambda out: {s: t.to_pylist() for s, t in pairs.read_pairs(out).items()}  # noqa: E731
    assert rows(out) == rows(ref_dir)  # each source's rows in shard order
    assert manifest["config_hash"] == ref_manifest["config_hash"]  # the engine is not part of the result
