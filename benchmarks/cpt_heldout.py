"""Held-out retrieval before vs after CPT: nDCG@10 and recall@10 of each model on held-out pairs.

Each source of the held-out pairs (``data/pairs/heldout``: title-body, question-answer,
translation; or any pair files / `mgte pairs` output) becomes a BEIR set of the same kind
(:func:`pipelines.eval.beir.write_beir_from_pairs`: one query per distinct query text, its paired
positives relevant), plus one set of all sources together. Every model then runs through
``mgte eval`` (the configured protocol, dense retrieval over each set's whole corpus), beside
BM25; the table holds each set's dense nDCG@10 / recall@10 and the change from the first model.

    python benchmarks/cpt_heldout.py --model start=runs/full/mlm-8192/model \\
        --model cpt=runs/full/cpt/model --out runs/cpt-heldout

With ``--dev-share 0.25`` a quarter of each set's queries (by query hash) is judged in
``qrels/dev.tsv`` instead of ``qrels/test.tsv``, for ``--set hybrid.weight=auto``; a model with a
sparse head then also gets a table of dense, sparse and hybrid (with its weight) on the test queries:

    python benchmarks/cpt_heldout.py --model trm=runs/trm --out runs/heldout-auto --dev-share 0.25 \
        --set hybrid.weight=auto --set format.doc_max_length=256

Writes OUT/beir/<set>/ (the sets), OUT/eval/<model>/<set>/ (`mgte eval` outputs) and
OUT/heldout.json (all numbers; `methods` holds every method's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("ndcg@10", "recall@10")


def build_sets(pairs: list[str], out: Path, dev_share: float = 0.0) -> dict[str, dict]:
    import pyarrow as pa

    from pipelines.eval.beir import write_beir_from_pairs
    from pipelines.pairs import load_pair_inputs

    tables, _ = load_pair_inputs(pairs, who="cpt_heldout")
    sets = {source: write_beir_from_pairs(table, out / "beir" / source, dev_share=dev_share)
            for source, table in tables.items()}
    if len(tables) > 1:
        sets["all"] = write_beir_from_pairs(pa.concat_tables(tables.values()), out / "beir" / "all",
                                            dev_share=dev_share)
    if dev_share:  # a set too small to have a dev query cannot choose a weight on one
        for name in [n for n, c in sets.items() if not c.get("dev_queries")]:
            print(f"cpt_heldout: set {name} left out: no query fell in its dev split "
                  f"({sets.pop(name)['queries']} queries)", file=sys.stderr)
    return sets


def evaluate(model: str, beir_dir: Path, out: Path, config: Path, sets: list[str]) -> dict:
    from foundation.config import load_config
    import pipelines.eval as stage

    cfg = load_config(stage.Config, config, [f"input=[{beir_dir}]", f"output={out}", f"model={model}",
                                             "reranker=null", *sets])
    stage.run(cfg)
    return json.loads((out / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH",
                        help="a model to evaluate (first one = the starting point); repeat")
    parser.add_argument("--pairs", nargs="+", default=[str(ROOT / "data/pairs/heldout")])
    parser.add_argument("--config", type=Path, default=ROOT / "dags/configs/eval/tiny.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra eval config override")
    parser.add_argument("--dev-share", type=float, default=0.0,
                        help="share of each set's queries judged in qrels/dev.tsv (for hybrid.weight=auto)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    sets = build_sets(args.pairs, args.out, args.dev_share)
    results: dict = {"sets": sets, "models": models, "metrics": {}, "methods": {}}
    for name, path in models.items():
        for set_name in sets:
            m = evaluate(path, args.out / "beir" / set_name, args.out / "eval" / name / set_name, args.config, args.sets)
            row = results["metrics"].setdefault(set_name, {})
            row[name] = {k: m["methods"]["dense"][k] for k in MEASURES}
            results["methods"].setdefault(set_name, {})[name] = {
                **{method: {k: v[k] for k in MEASURES} for method, v in m["methods"].items()},
                **({"hybrid_weight": m["hybrid"]} if "hybrid" in m else {})}
            row.setdefault("bm25", {k: m["methods"]["bm25"][k] for k in MEASURES} if "bm25" in m["methods"] else None)
    (args.out / "heldout.json").write_text(json.dumps(results, indent=1))
    first = next(iter(models))
    print(f"| set | queries | docs | {' | '.join(f'{n} nDCG@10 / R@10' for n in [*models, 'bm25'])} |")
    print("|---|---|---|" + "---|" * (len(models) + 1))
    for set_name, info in sets.items():
        row = results["metrics"][set_name]
        cells = []
        for name in [*models, "bm25"]:
            v = row.get(name)
            if v is None:
                cells.append("-")
                continue
            cell = f"{v['ndcg@10']:.3f} / {v['recall@10']:.3f}"
            if name not in (first, "bm25"):
                cell += f" ({v['ndcg@10'] - row[first]['ndcg@10']:+.3f} / {v['recall@10'] - row[first]['recall@10']:+.3f})"
            cells.append(cell)
        print(f"| {set_name} | {info['queries']} | {info['documents']} | {' | '.join(cells)} |")
    print_hybrid(results)
    return 0


def print_hybrid(results: dict) -> None:
    """Dense, sparse and hybrid nDCG@10 of each model with a sparse head, and hybrid - max(dense, sparse)."""
    rows = [(s, n, v) for s, by_model in results["methods"].items() for n, v in by_model.items() if "hybrid" in v]
    if not rows:
        return
    print("\n| set | model | dense | sparse | hybrid | w (chosen by) | hybrid - max(dense, sparse) |")
    print("|---|---|---|---|---|---|---|")
    for set_name, name, v in rows:
        d, sp, h = (v[m]["ndcg@10"] for m in ("dense", "sparse", "hybrid"))
        w = v.get("hybrid_weight", {})
        print(f"| {set_name} | {name} | {d:.4f} | {sp:.4f} | {h:.4f} | {w.get('weight')} ({w.get('chosen_by')}) | "
              f"{h - max(d, sp):+.4f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
