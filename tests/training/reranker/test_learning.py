"""The reranker learns: a seeded 8-step run from all-MiniLM-L6-v2 (a fresh scoring head) on a fixed
small set (tests/training/learning_data.py: queries whose mined negatives echo their phrasing)
raises the held-out MRR of ranking each query's positive among every held-out candidate, scored
through mgte's own reranker API on the model saved before training and on the model the run saved.

Checked against these deliberate breaks, one at a time (tests/breaks.py applies them); held-out
MRR gain each reached, intact: 0.077 -> 0.738 (+0.661):

- loss sign flipped (``group_info_nce`` returns minus the cross-entropy): 0.077 -> 0.028 (-0.048)
- labels off by one (each group's target is its first negative): 0.077 -> 0.030 (-0.047)

(The reranker's temperature is 1.0 in every config, so "temperature ignored" is no break here.)
"""

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from foundation.config import load_config
from storage_schemas.mine import HARD_NEGATIVES
from tests.training import learning_data
from training import checkpoint as ckpt
from training import reranker

REPO = Path(__file__).resolve().parents[3]
MARGIN = 0.4  # held-out MRR gain over the start: intact +0.661, best break -0.047


def held_out_mrr(model_dir: Path) -> float:
    from pipelines.embedding import load_reranker

    queries, docs, gold = learning_data.held_out()
    pairs = [(q, d) for q in queries for d in docs]
    scores = load_reranker(str(model_dir), device="cpu").score([p[0] for p in pairs], [p[1] for p in pairs],
                                                               max_length=64, query_max_tokens=16)[0]
    return learning_data.mrr(np.asarray(scores).reshape(len(queries), len(docs)), gold)


def learning_cfg(tmp: Path, table: Path) -> reranker.Config:
    from model.tokenizer import bundled_xlmr_tokenizer_json

    return load_config(reranker.Config, REPO / "dags/configs/reranker/tiny.yaml", [
        f"input=[{table}]", f"output={tmp / 'out'}", "engine=local", "init=all-MiniLM-L6-v2",
        "model.rope_theta=null", f"tokenizer={bundled_xlmr_tokenizer_json()}", "data.hard_negatives=2",
        "data.random_negatives=1", "data.query_max_tokens=16", "data.max_length=64",
        "data.groups=[{max_length: 64, batch_size: 8, sub_batch: 32}]", "loop.max_steps=8", "loop.ckpt_every=0",
        "loop.log_every=1", "loop.progress=false", "loop.tensorboard=false", "loop.optim.lr=1e-4",
        "loop.optim.head_lr=3e-3"])


@pytest.fixture(scope="module")
def before_and_after(tmp_path_factory):
    os.environ["HF_HUB_OFFLINE"] = "1"
    tmp = tmp_path_factory.mktemp("reranker-learning")
    table = tmp / "mined.parquet"
    pq.write_table(HARD_NEGATIVES.from_rows(learning_data.hard_negative_rows(n_neg=2)), table)
    cfg = learning_cfg(tmp, table)
    ckpt.seed_everything(cfg.loop.seed)  # as the loop does before it builds the model
    task = reranker.RerankerTask(cfg)
    task.save_model(task.build_model(), tmp / "start")
    reranker.run(cfg)
    return held_out_mrr(tmp / "start"), held_out_mrr(tmp / "out" / "model")


def test_a_tiny_run_raises_held_out_mrr(before_and_after):
    start, end = before_and_after
    print(f"held-out MRR {start:.3f} -> {end:.3f}")
    assert end - start > MARGIN, (start, end)
