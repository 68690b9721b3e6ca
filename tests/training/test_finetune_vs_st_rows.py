"""benchmarks/finetune_vs_st.py's row conversion (no training): the peer trainers get mgte's rows."""

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.finetune_vs_st import ce_columns, main, mgte_trm_sets, st_trm_columns  # noqa: E402
from model.tokenizer import load_tokenizer  # noqa: E402
from training.model_builder import resolve_init  # noqa: E402


def test_rows_become_mnrl_columns_and_listnet_groups():
    tok = load_tokenizer(resolve_init("all-MiniLM-L6-v2"))
    rows = {"query": ["how do I open a file in python " * 5, "hi"], "positive": ["use open()", "hello"],
            "negatives": [["a", "b"], ["c", "d"]]}
    cols = st_trm_columns(rows, tok, query_max=8)
    assert list(cols) == ["anchor", "positive", "negative_1", "negative_2"]
    assert cols["negative_2"] == ["b", "d"] and cols["anchor"][1] == "hi"
    assert len(tok(cols["anchor"][0])["input_ids"]) == 8  # cut as mgte cuts: 8 tokens with [CLS] and [SEP]
    ce = ce_columns(["q1", "q2"], [["p", "n1", "n2"], ["p2", "m1", "m2"]], tok, query_max=32, pair_max=64)
    assert ce["labels"][0][0] == 0.0 and all(math.isinf(x) and x < 0 for x in ce["labels"][0][1:])
    sets = mgte_trm_sets({"steps": 3, "negatives": 2, "doc_max": 64, "batch": 4, "query_max": 8, "lr": 1e-4,
                          "temperature": 0.05, "warmup_ratio": 0.0}, 1, 0.0, 16)
    assert "loss.sparse_weight=0.0" in sets and any("sub_batch: 16" in x for x in sets) and "engine=local" in sets


def test_out_is_required(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main([])
