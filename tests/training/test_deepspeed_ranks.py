"""DeepSpeed ZeRO with 2 ranks on CPU (Ray Train, gloo): CPT's cached-gradient step under ZeRO-2
(partitioned gradients accumulated over the step's chunks, reduced once) and MLM under ZeRO-1 give,
step by step, the losses of the same 2-rank run with DDP and no DeepSpeed. With 2 ranks ZeRO really
partitions: each rank holds and steps half of the optimizer state (ZeRO-1) and of the reduced
gradients (ZeRO-2). ZeRO-1 under the cached step (1 rank) is in test_deepspeed.py."""

import importlib.util

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="needs the optional deepspeed package")

ZERO = {1: ["loop.deepspeed.enabled=true", "loop.deepspeed.zero_stage=1"],
        2: ["loop.deepspeed.enabled=true", "loop.deepspeed.zero_stage=2"]}
RANKS = ["engine=ray", "scaling.num_workers=2", "scaling.cpus_per_worker=1", "ray.num_cpus=2"]


@pytest.mark.slow
def test_zero_on_two_ranks_equals_ddp(tmp_path, monkeypatch, local_ray):
    """In this process on the session's Ray (the workers take DS_ACCELERATOR from the driver)."""
    import torch

    from foundation.config import load_config
    from model import MGTEConfig, MGTEModel, save_pretrained
    from pipelines.mlm_shards import Config as ShardConfig, run as run_shards
    from tests.pipelines.test_mlm_shards import clean_doc_rows, write_clean_docs
    from tests.training.cpt.test_cpt import tiny_cfg, write_pairs
    from tests.training.mlm.test_mlm import CONFIGS, TEST_SETS
    from training import cpt, mlm
    from training.metrics import read_metrics

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    save_pretrained(MGTEModel(MGTEConfig.tiny(rope_theta=160_000.0)), tmp_path / "init")
    pairs = write_pairs(tmp_path / "pairs")
    files = write_clean_docs(tmp_path / "docs", [clean_doc_rows(40, long_every=9), clean_doc_rows(40, start=40)])
    run_shards(load_config(ShardConfig, CONFIGS / "mlm-shards/tiny.yaml",
                           [f"input=[{', '.join(map(str, files))}]", f"output={tmp_path / 'shards'}", "max_len=64",
                            "progress=false"]))
    losses = {}
    for name, sets in (("plain", []), ("zero2", ZERO[2])):
        cpt.run(tiny_cfg(tmp_path / ("cpt-" + name), [pairs], *RANKS, *sets, init=tmp_path / "init"))
        losses["cpt-" + name] = {r["step"]: r["loss"]
                                 for r in read_metrics(tmp_path / ("cpt-" + name) / "out" / "metrics.jsonl")}
    for name, sets in (("plain", []), ("zero1", ZERO[1])):
        out = tmp_path / ("mlm-" + name)
        mlm.run(load_config(mlm.Config, CONFIGS / "mlm/tiny.yaml",
                            [f"input=[{tmp_path / 'shards'}]", f"output={out}", *TEST_SETS, *RANKS, *sets]))
        losses["mlm-" + name] = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")}
    for kind, stage, steps in (("cpt", "zero2", 4), ("mlm", "zero1", 6)):
        plain, got = losses[f"{kind}-plain"], losses[f"{kind}-{stage}"]
        assert sorted(plain) == list(range(1, steps + 1)), kind
        assert sorted(got) == sorted(plain), (kind, stage)
        for step, loss in plain.items():
            assert got[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), (kind, stage, step)
    # the engine's partitioned state is in the one checkpoint copy
    assert (tmp_path / "cpt-zero2" / "out" / "checkpoints" / "step-4" / "deepspeed").is_dir()
    assert any((tmp_path / "mlm-zero1" / "checkpoints").glob("step-*/deepspeed"))
