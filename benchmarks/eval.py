"""Evaluation speed (issue 7): our metric code vs pytrec_eval, and queries/s of each retrieval method.

    python benchmarks/eval.py --out benchmarks/eval.json

1. Metrics: ``pipelines.eval.metrics.evaluate_arrays`` (numpy, vectorised over the run) against
   ``pytrec_eval.RelevanceEvaluator`` (C) on a synthetic run of ``--queries`` queries x ``--depth``
   documents with graded judgements and ties; both compute nDCG@10, recall@20, recall@100, MAP
   (and ours mrr@10). Reported: best of ``--repeat`` wall times, and the largest |difference|.
   pytrec_eval's time includes building its evaluator from the qrels (it needs one per qrels).
2. Retrieval: ``mgte eval`` on the bundled ``data/eval/tiny-beir`` (345 multilingual documents, 130
   queries) with a TRM (dense + sparse head) and a reranker; queries/s per method as the stage
   measures them (query encoding + search [+ fusion] [+ reranking]). Without ``--model`` /
   ``--reranker`` tiny random mgte models (2 x 64, the real XLM-R vocabulary) are built: their
   speed is the point, not their quality. all-MiniLM-L6-v2 (sentence-transformers) is run beside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BEIR = ROOT / "data" / "eval" / "tiny-beir"


def synthetic(n_queries: int, depth: int, n_docs: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q_ids = np.repeat([f"q{i}" for i in range(n_queries)], depth)
    d_ids = np.array([f"d{j}" for j in rng.integers(0, n_docs, size=n_queries * depth * 2)])
    # unique documents per query: take the first `depth` distinct ids of each query's draw
    docs = []
    for i in range(n_queries):
        row = list(dict.fromkeys(d_ids[i * depth * 2:(i + 1) * depth * 2].tolist()))[:depth]
        docs += row + [f"x{i}_{k}" for k in range(depth - len(row))]
    scores = np.round(rng.random(n_queries * depth), 3)  # rounding makes ties
    qrels = {}
    for i in range(n_queries):
        judged = rng.choice(n_docs, size=5, replace=False)
        qrels[f"q{i}"] = {f"d{j}": int(rng.integers(0, 3)) for j in judged}
    return q_ids, np.array(docs), scores, qrels


def bench_metrics(n_queries: int, depth: int, repeat: int) -> dict:
    import pytrec_eval

    from pipelines.eval import metrics as M

    q, d, s, qrels = synthetic(n_queries, depth, n_docs=5000)
    run: dict = {}
    for qi, di, si in zip(q.tolist(), d.tolist(), s.tolist()):
        run.setdefault(qi, {})[di] = si
    measures = ("ndcg@10", "recall@20", "recall@100", "map")
    spec = {m: M.parse_measure(m).trec_eval for m in measures}

    def ours():
        return M.evaluate_arrays(q, d, s, qrels, measures + ("mrr@10",))

    def theirs():
        return pytrec_eval.RelevanceEvaluator(qrels, {v[0] for v in spec.values()}).evaluate(run)

    def best(fn):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_ours, a = best(ours)
    t_ref, b = best(theirs)
    diff = max(abs(a[qid][m] - b[qid][spec[m][1]]) for qid in b for m in measures)
    return {"queries": n_queries, "depth": depth, "rows": int(q.size), "ours_s": round(t_ours, 4),
            "pytrec_eval_s": round(t_ref, 4), "ours_over_pytrec": round(t_ours / t_ref, 2),
            "max_abs_diff": diff}


def tiny_models(root: Path) -> tuple[str, str]:
    import torch

    import model
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer

    tok = load_tokenizer(bundled_xlmr_tokenizer_json())
    torch.manual_seed(0)
    trm = model.MGTEForEmbedding(model.MGTEConfig.tiny())
    with torch.no_grad():
        trm.classifier.bias.fill_(0.5)
    model.save_pretrained(trm, root / "trm", tokenizer=tok)
    model.save_pretrained(model.MGTEForSequenceClassification(model.MGTEConfig.tiny(num_labels=1)), root / "rr",
                          tokenizer=tok)
    return str(root / "trm"), str(root / "rr")


def bench_retrieval(model_dir: str, reranker: str | None, work: Path, sets: list[str]) -> dict:
    from foundation.config import load_config
    from pipelines.eval import Config, run

    out = work / f"eval-{len(list(work.iterdir()))}"
    cfg = load_config(Config, ROOT / "dags/configs/eval/tiny.yaml",
                      [f"input=['{BEIR}']", f"output='{out}'", f"model='{model_dir}'",
                       f"reranker={'null' if reranker is None else repr(reranker)}", "cache=false", *sets])
    t0 = time.perf_counter()
    manifest = run(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"model": model_dir, "reranker": reranker, "settings": sets, "stage_s": round(time.perf_counter() - t0, 2),
            "queries": metrics["n_queries"], "queries_per_s": metrics["queries_per_s"],
            "timings_s": manifest["extra"]["timings_s"],
            "ndcg@10": {m: round(v["ndcg@10"], 4) for m, v in metrics["methods"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", help="TRM directory (default: a tiny random one)")
    parser.add_argument("--reranker", help="reranker directory (default: a tiny random one)")
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__}}
    result["metrics"] = bench_metrics(args.queries, args.depth, args.repeat)
    print(json.dumps(result["metrics"], indent=1), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trm, rr = (args.model, args.reranker) if args.model else tiny_models(work)
        (work / "runs").mkdir()
        result["retrieval"] = [
            bench_retrieval(trm, args.reranker or rr, work / "runs", ["format.doc_max_length=512", "rerank.top_k=20"]),
        ]
        if not args.skip_minilm:
            result["retrieval"].append(bench_retrieval("all-MiniLM-L6-v2", None, work / "runs", []))
    for r in result["retrieval"]:
        print(json.dumps(r, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
