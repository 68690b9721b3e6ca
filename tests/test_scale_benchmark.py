"""benchmarks/scale.py (issue 27): the synthetic corpus plants duplicates at the requested rate (and
the stage's dedup finds exactly them), and a cell whose memory estimate exceeds the budget is
skipped, with the estimate as the reason, without running."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import scale  # noqa: E402


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_synthetic_corpus_plants_duplicates_at_the_rate(rate):
    from pipelines.corpus.dedup import shingle_hashes

    records, truth = scale.synthetic_corpus(200, rate, seed=3)
    assert len(records) == 200 and len(truth) == round(rate * 200)
    by_id = {r["id"]: r for r in records}
    originals = [r for r in records if r["id"].startswith("o")]
    assert len({r["text"] for r in originals}) == len(originals) == 200 - len(truth)
    seen = set()
    for r in records:  # every duplicate comes after its original
        if r["id"].startswith("d"):
            t = next(t for t in truth if t["id"] == r["id"])
            assert t["dup_of"] in seen
        seen.add(r["id"])
    for t in truth:
        a, b = by_id[t["id"]]["text"], by_id[t["dup_of"]]["text"]
        if t["kind"] == "exact":
            assert a == b
        else:
            sa, sb = set(shingle_hashes(a, 5).tolist()), set(shingle_hashes(b, 5).tolist())
            assert a != b and len(sa & sb) / len(sa | sb) >= 0.75
    if rate:
        assert {t["kind"] for t in truth} == {"exact", "near"}


def test_the_stages_dedup_flags_exactly_the_planted_duplicates():
    from pipelines.corpus.config import DedupConfig
    from pipelines.corpus.dedup import MinHasher, text_hash
    from pipelines.corpus.dedup_engines import dedup_in_memory
    from pipelines.corpus.normalize import normalize_text

    cfg = DedupConfig()
    records, truth = scale.synthetic_corpus(200, 0.1, seed=5)
    hasher = MinHasher(cfg.bands * cfg.rows, cfg.seed)
    rows = [{"path": "p", "line": i + 1, "id": r["id"], "text_hash": text_hash(normalize_text(r["text"])),
             "minhash": hasher.signature_of(normalize_text(r["text"]), n=cfg.ngram).tolist()}
            for i, r in enumerate(records)]
    decided = {records[d["line"] - 1]["id"]: d["reason"] for d in dedup_in_memory(rows, cfg)}
    assert decided == {t["id"]: f"{t['kind']}_duplicate" for t in truth}


def test_shuffled_copies_are_new_documents():
    base = scale.bundled_originals()
    records, _ = scale.synthetic_corpus(len(base) + 50, 0.0)
    assert len({r["text"] for r in records}) == len(records)  # no duplicate but the planted ones
    copies = records[len(base):]
    for orig, copy in zip(base, copies):
        if len(orig["text"].split(" ")) >= 20:
            assert sorted(copy["text"].split(" ")) == sorted(orig["text"].split(" "))
        else:
            assert sorted(copy["text"]) == sorted(orig["text"])
    pairs, n_dup = scale.synthetic_pairs(5000, 0.1)
    assert len(pairs) == 5000 and len({(p["query"], p["positive"]) for p in pairs}) == 5000 - n_dup == 4500


def test_estimator_skips_a_cell_over_budget_with_the_estimate_as_reason(tmp_path):
    est, basis = scale.estimate_mb("mine", "ivf", 1_000_000, [], dim=768)
    assert est > 4000  # a 1M x 768 float32 IVF index alone is ~2.9 GiB
    reason = scale.skip_reason(est, basis, budget_mb=est - 1)
    assert reason is not None and f"{est:.0f} MB" in reason
    assert scale.skip_reason(est, basis, budget_mb=est + 1) is None
    # measured smaller sizes of the same cell win over the prior: the line through the two largest
    measured = [{"status": "ok", "stage": "corpus", "engine": "local", "size": n, "tree_peak_mb": m, "dim": None}
                for n, m in ((1000, 500.0), (10000, 9999.0), (10000, 600.0), (100000, 1500.0))]  # a rerun: the last wins
    est2, basis2 = scale.estimate_mb("corpus", "local", 1_000_000, measured)
    assert est2 == pytest.approx(1500 + 900 / 90000 * 900000) and "10000 and 100000" in basis2
    # only the newest run's code counts: an older code's larger point is left out
    newer = [dict(r, code="abc1234") for r in measured] + [
        {"status": "ok", "stage": "corpus", "engine": "local", "size": 300000, "tree_peak_mb": 90000.0, "dim": None,
         "code": "old0000"}] + [dict(measured[-1], code="abc1234+changes")]
    est3, basis3 = scale.estimate_mb("corpus", "local", 1_000_000, newer)
    assert est3 == pytest.approx(est2) and "10000 and 100000" in basis3
    # the whole command: skipped before anything is written or run
    results = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "benchmarks/scale.py", "--stage", "mine", "--engine", "ivf", "--size",
                           "1000000", "--budget-mb", "100", "--results", str(results), "--scratch", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(results.read_text())
    assert row["status"] == "skipped" and f"estimated peak {row['estimate_mb']} MB" in row["reason"]
    assert "seconds" not in row and list(tmp_path.iterdir()) == [results]
