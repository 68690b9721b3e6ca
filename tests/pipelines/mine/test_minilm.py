"""`mgte mine` with the real all-MiniLM-L6-v2 (offline copy) on 50 real English pairs: every row's negatives
equal a brute-force ranking computed independently with sentence-transformers."""

import json

import numpy as np

from pipelines import mine
from pipelines.embedding import resolve_model_dir
from tests.pipelines.mine.conftest import REPO, config, read_rows, write_jsonl


def test_minilm_negatives_equal_an_independent_brute_force_ranking(tmp_path):
    from sentence_transformers import SentenceTransformer

    pairs, seen = [], set()
    for line in (REPO / "data/pairs/train/dialogue_chatterbot.jsonl").read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        if p["lang"] == "en" and p["positive"] not in seen and len(pairs) < 50:
            seen.add(p["positive"])
            pairs.append(p)
    src = write_jsonl(tmp_path / "pairs.jsonl", [{"query_id": p["id"], "query": p["query"], "positive_id": p["id"],
                                                  "positive": p["positive"]} for p in pairs])
    cfg = config(tmp_path, [src], "encode.store_dtype=float32", "encode.device=cpu", model="all-MiniLM-L6-v2",
                 num_negatives=3, rank_range=[2, 15], max_score_ratio=0.95)
    manifest = mine.run(cfg)
    assert manifest["extra"]["miner"].startswith("all-MiniLM-L6-v2 (sentence-transformers:")

    st = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu")
    st.max_seq_length = 256
    docs = st.encode([p["positive"] for p in pairs], normalize_embeddings=True)
    queries = st.encode([p["query"] for p in pairs], normalize_embeddings=True)
    ids = [p["id"] for p in pairs]
    rows = {r["query_id"]: r for r in read_rows(tmp_path / "out")}
    checked = 0
    for i, p in enumerate(pairs):
        scores = docs @ queries[i]
        order = [j for j in sorted(range(len(ids)), key=lambda j: (-scores[j], ids[j])) if j != i]
        passing = [(ids[j], rank) for rank, j in enumerate(order[:15], 1)
                   if rank >= 2 and scores[j] < 0.95 * scores[i]]
        if len(passing) < 3:
            assert p["id"] not in rows
            continue
        row = rows[p["id"]]
        assert list(zip(row["negative_ids"], row["negative_ranks"])) == passing[:3], p["id"]
        np.testing.assert_allclose(row["negative_scores"], [scores[ids.index(n)] for n in row["negative_ids"]],
                                   atol=2e-4)
        assert abs(row["positive_score"] - scores[i]) < 2e-4
        checked += 1
    assert checked >= 25
