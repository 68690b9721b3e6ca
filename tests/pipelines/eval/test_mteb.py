"""mteb runs our encoder wrapper on a local BEIR directory offline, and agrees with `mgte eval`."""

import json

import pytest

mteb = pytest.importorskip("mteb", reason="optional: mteb is a dev extra")

from foundation.config import load_config  # noqa: E402
from pipelines.eval import Config, run  # noqa: E402
from pipelines.eval.mteb_wrapper import MTEBEncoder, local_retrieval_task  # noqa: E402
from tests.pipelines.eval.test_stage import TINY  # noqa: E402


@pytest.mark.parametrize("model_key", ["minilm", "trm"])
def test_mteb_on_a_local_task_matches_mgte_eval(model_key, small_beir, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    name = "all-MiniLM-L6-v2" if model_key == "minilm" else str(tiny_models["trm"])
    encoder = MTEBEncoder(name, device="cpu", max_length=256)
    assert isinstance(encoder, mteb.models.models_protocols.EncoderProtocol)
    task = local_retrieval_task(small_beir)
    result = mteb.evaluate(encoder, task, cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]

    # mteb joins title and text with a space; give mgte eval the same protocol and compare
    out = tmp_path / "eval"
    run(load_config(Config, TINY, [f"input=['{small_beir}']", f"output='{out}'", f"model='{name}'", "cache=false",
                                   "format.doc_template='{title} {text}'", "format.doc_max_length=256",
                                   "bm25.enabled=false", "sparse.enabled=false", "hybrid.enabled=false"]))
    ours = json.loads((out / "metrics.json").read_text())["methods"]["dense"]
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    assert scores["recall_at_100"] == pytest.approx(ours["recall@100"], abs=1e-4)
    assert scores["mrr_at_10"] == pytest.approx(ours["mrr@10"], abs=1e-4)
