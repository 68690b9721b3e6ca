"""The model card (model/card.py): what it says is true of the directory, its usage code runs as
written in a fresh offline process, held-out metrics go into it without touching the checksums."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.card import CARD, add_evaluation, write_card
from model.files import verify_checksums

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_trm(tmp_path_factory) -> Path:
    """A TRM of our tiny encoder as `mgte train trm` saves it ([CLS], Matryoshka 32/64, sparse/)."""
    import torch

    from model import MGTEConfig, MGTEModel
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer
    from training.trm.model import TRMEmbedder, save_trm

    torch.manual_seed(0)
    tok = load_tokenizer(str(bundled_xlmr_tokenizer_json()))
    trm = TRMEmbedder(MGTEModel(MGTEConfig.tiny()), "cls", [tok.cls_token_id, tok.sep_token_id, tok.pad_token_id])
    out = tmp_path_factory.mktemp("card") / "model"
    return save_trm(trm, out, tokenizer=tok, max_seq_length=128, dims=(32, 64))


LINEAGE = {"name": "trm (train-trm)", "stage": "train-trm", "config_hash": "0123456789abcdef", "code_version": "0.1+gabc",
           "init": "/runs/full/cpt/model", "inputs": [{"path": "/runs/full/mine", "stage": "mine", "config_hash": "fedcba9876543210"}],
           "counts": {"input": 10, "kept": 9, "dropped": 1, "quarantined": 0}, "final": {"step": 30, "loss": 1.25}}


def test_the_card_describes_the_directory_and_its_lineage(tiny_trm):
    card = write_card(tiny_trm, LINEAGE).read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n")
    assert "- pooling: cls, normalised" in card and "- Matryoshka sizes: 32, 64" in card
    assert 'SparseEncoder("DIR/sparse", trust_remote_code=True)' in card and "truncate_dim=32" in card
    assert "config hash `0123456789abcdef`" in card and "`/runs/full/mine` (a `mine` build, config hash `fedcba9876543210`)" in card
    assert "step 30" in card and "loss 1.25" in card and "Not evaluated by a DAG yet" in card
    assert verify_checksums(tiny_trm)  # the card is not one of the checked files


def test_the_cards_usage_code_runs_as_written(tiny_trm):
    write_card(tiny_trm, LINEAGE)
    code = re.search(r"```python\n(.*?)```", (tiny_trm / CARD).read_text(), re.S).group(1).replace("DIR", str(tiny_trm))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code + "\nprint('ran', dense.shape, len(weights))"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran (1, 64) 1" in proc.stdout


def test_evaluations_fill_the_table_and_replace_their_own_rows(tiny_trm):
    write_card(tiny_trm, LINEAGE)
    add_evaluation(tiny_trm, "eval-trm", "tiny-beir", {"dense": {"ndcg@10": 0.5, "recall@100": 0.9},
                                                       "hybrid": {"ndcg@10": 0.55, "recall@100": 0.91}})
    add_evaluation(tiny_trm, "eval-other", "other", {"dense": {"ndcg@10": 0.25}})
    add_evaluation(tiny_trm, "eval-trm", "tiny-beir", {"dense": {"ndcg@10": 0.6, "recall@100": 0.95}})
    card = (tiny_trm / CARD).read_text()
    rows = [r for r in card.splitlines() if r.startswith("| eval-")]
    assert rows == ["| eval-other | other | dense | 0.2500 | - |", "| eval-trm | tiny-beir | dense | 0.6000 | 0.9500 |"]
    assert "Not evaluated" not in card
    write_card(tiny_trm, LINEAGE)  # a rewritten card keeps the evaluations
    assert [r for r in (tiny_trm / CARD).read_text().splitlines() if r.startswith("| eval-")] == rows
    assert verify_checksums(tiny_trm)
    assert json.loads((tiny_trm / "checksums.json").read_text())["sha256"].get(CARD) is None
