"""The mine configs: paper.yaml carries what the paper says about mining (read from its text,
tests/paper.py) and names the rest of its rule as ours, tiny.yaml derives from it with CPU
settings, and a wrong key or rule is refused naming it."""

import re
from pathlib import Path

import pytest

from foundation.config import load_config
from foundation.errors import ConfigError
from pipelines.mine import Config
from pipelines.pairs.config import LimitsConfig

CONFIGS = Path(__file__).resolve().parents[3] / "dags" / "configs" / "mine"


def test_paper_yaml_carries_the_paper_numbers_and_names_the_rest_ours():
    from tests import paper as mgte_paper

    b3 = mgte_paper.section("B.3 TRM Training Setup", "B.4 Reranker Training Setup")
    cfg = load_config(Config, CONFIGS / "paper.yaml")
    assert cfg.num_negatives == int(mgte_paper.find(r"one positive passage and (\d+) hard negative", b3)[0])
    mgte_paper.find(r"employ our (contrastive pre-trained) model to mine hard negatives")  # model: the DAG's CPT
    limits = LimitsConfig()  # the lengths the pairs stage records
    assert (cfg.encode.query_max_length, cfg.encode.doc_max_length) == (limits.query_max_tokens,
                                                                        limits.document_max_tokens)
    # the paper gives no window, ratio, margin or selection: the config's comments say whose they are
    text = (CONFIGS / "paper.yaml").read_text()
    for key in ("rank_range:", "max_score_ratio:", "select:"):
        line = next(x for x in text.splitlines() if x.startswith(key))
        assert "# ours" in line, line
    for absent in (r"\brank", r"0\.95"):
        assert not re.search(absent, b3 + mgte_paper.section("B.4 Reranker Training Setup", "Appendix C NLU Evaluation"))


def test_tiny_yaml_keeps_the_rule_and_runs_on_cpu():
    tiny, paper = load_config(Config, CONFIGS / "tiny.yaml"), load_config(Config, CONFIGS / "paper.yaml")
    for key in ("num_negatives", "rank_range", "max_score_ratio", "margin", "select", "seed", "model"):
        assert getattr(tiny, key) == getattr(paper, key), key
    assert tiny.engine == "local" and tiny.encode.device == "cpu" and tiny.encode.num_gpus == 0


@pytest.mark.parametrize("override, word", [("rank_range=[0, 5]", "rank_range"), ("num_negatives=200", "num_negatives"),
                                            ("select=best", "select"), ("rank_rnage=[1, 2]", "rank_rnage"),
                                            ("search.index=ivfpq", "search.index")])
def test_bad_keys_are_refused_naming_them(override, word):
    with pytest.raises(ConfigError, match=word.replace(".", r"\.")):
        load_config(Config, CONFIGS / "tiny.yaml", [override])
