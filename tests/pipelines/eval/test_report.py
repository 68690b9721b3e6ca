"""The HTML report and the several-models comparison page, with real PNG plots."""

import json

import pytest

from foundation.config import load_config
from pipelines.eval import Config, run
from pipelines.eval.report import write_comparison
from tests.pipelines.eval.test_stage import TINY


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_and_comparison(small_beir, tiny_models, tmp_path):
    dirs = {}
    for name, model in (("bm25-only", "null"), ("mlm", f"'{tiny_models['mlm']}'")):
        dirs[name] = tmp_path / name
        run(load_config(Config, TINY, [f"input=['{small_beir}']", f"output='{dirs[name]}'", f"model={model}",
                                       "cache=false", "format.doc_max_length=64", f"name={name}"]))
    page = (dirs["mlm"] / "report.html").read_text()
    assert "nDCG@10 per language" in page and "plots/ndcg_per_language.png" in page
    assert "final: run.trec" in page and "the model has no sparse head" in page
    width, height = _png_size(dirs["mlm"] / "plots/ndcg_per_language.png")
    assert width > 300 and height > 200
    metrics = json.loads((dirs["mlm"] / "metrics.json").read_text())
    assert metrics["name"] == "mlm"

    out = write_comparison(dirs, tmp_path / "compare")
    html = out.read_text()
    assert html.count("<tr>") == 2 * (1 + 2)  # two tables (overall, per language): header, bm25 once, mlm / dense
    assert "mlm / dense" in html
    assert _png_size(tmp_path / "compare/plots/compare_ndcg.png")[0] > 300


def test_report_is_optional(small_beir, tmp_path):
    run(load_config(Config, TINY, [f"input=['{small_beir}']", f"output='{tmp_path / 'o'}'", "model=null",
                                   "report=false"]))
    assert not (tmp_path / "o/report.html").exists() and (tmp_path / "o/metrics.json").is_file()


@pytest.mark.parametrize("bad", ["bm25.enabled=false"])
def test_nothing_to_evaluate_is_a_config_error(bad):
    from foundation.errors import ConfigError

    with pytest.raises(ConfigError, match="nothing to evaluate"):
        load_config(Config, TINY, ["model=null", bad])
