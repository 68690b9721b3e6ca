"""Held-out retrieval before vs after CPT: nDCG@10 and recall@10 of each model on held-out pairs.

Each source of the held-out pairs (``data/pairs/heldout``: title-body, question-answer,
translation; or any pair files / `mgte pairs` output) becomes a BEIR set of the same kind
(:func:`pipelines.eval.beir.write_beir_from_pairs`: one query per distinct query text, its paired
positives relevant), plus one set of all sources together. Every model then runs through
``mgte eval`` (the configured protocol, dense retrieval over each set's whole corpus), beside
BM25; the table holds each set's dense nDCG@10 / recall@10 and the change from the first model.

    python benchmarks/cpt_heldout.py --model start=runs/full/mlm-8192/model \\
        --model cpt=runs/full/cpt/model --out runs/cpt-heldout

Writes OUT/beir/<set>/ (the sets), OUT/eval/<model>/<set>/ (`mgte eval` outputs) and
OUT/heldout.json (all numbers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURES = ("ndcg@10", "recall@10")


def build_sets(pairs: list[str], out: Path) -> dict[str, dict]:
    import pyarrow as pa

    from pipelines.eval.beir import write_beir_from_pairs
    from pipelines.pairs import load_pair_inputs

    tables, _ = load_pair_inputs(pairs, who="cpt_heldout")
    sets = {source: write_beir_from_pairs(table, out / "beir" / source) for source, table in tables.items()}
    if len(tables) > 1:
        sets["all"] = write_beir_from_pairs(pa.concat_tables(tables.values()), out / "beir" / "all")
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    models = dict(m.split("=", 1) for m in args.model)
    sets = build_sets(args.pairs, args.out)
    results: dict = {"sets": sets, "models": models, "metrics": {}}
    for name, path in models.items():
        for set_name in sets:
            m = evaluate(path, args.out / "beir" / set_name, args.out / "eval" / name / set_name, args.config, args.sets)
            row = results["metrics"].setdefault(set_name, {})
            row[name] = {k: m["methods"]["dense"][k] for k in MEASURES}
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
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
