"""The mine configs: paper.yaml carries the paper's mining numbers (PAPER_FACTS "Hard negatives"),
tiny.yaml derives from it with CPU settings, and a wrong key or rule is refused naming it."""

from pathlib import Path

import pytest

from foundation.config import load_config
from foundation.errors import ConfigError
from pipelines.mine import Config
from pipelines.pairs.config import LimitsConfig

CONFIGS = Path(__file__).resolve().parents[3] / "dags" / "configs" / "mine"


def test_paper_yaml_carries_the_paper_numbers():
    paper = load_config(Config, CONFIGS / "paper.yaml")
    assert paper.num_negatives == 8  # mGTE 2.2: 1 positive + 8 hard negatives per query
    assert paper.rank_range == (10, 100) and paper.max_score_ratio == 0.95 and paper.select == "top"
    limits = LimitsConfig()  # the fine-tuning lengths (B.3) the pairs stage records
    assert (paper.encode.query_max_length, paper.encode.doc_max_length) == (limits.query_max_tokens,
                                                                            limits.document_max_tokens)
    assert paper.search.index == "flat" and paper.engine == "ray"


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
