"""Audit of a ``mgte mine`` output: positive vs negative score distributions, the ranks the
negatives came from, the gap to the positive per source, why (query, positive) rows were
dropped (how many candidates passed each rule), the embedding cache use, and sample rows."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipelines.audit.page import esc, image, pyplot, read_rows, save_figure, short, table

SAMPLE_ROWS = 3
RULE_COUNTS = ("ranked", "in_window", "not_copy", "below_ratio", "below_margin", "passing")


def _hist(path: Path, series: dict[str, np.ndarray], *, title: str, xlabel: str, bins) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in series.items():
        if len(values):
            ax.hist(values, bins=bins, alpha=0.55, label=f"{label} ({len(values)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name


def _drop_rules(root: Path, files: list[str]) -> list[str]:
    """Mean candidates left after each rule, over the too_few_negatives rows."""
    facts = [json.loads(r["scores"]) for r in read_rows(root, files, ["reason", "scores"])
             if r.get("reason") == "too_few_negatives" and r.get("scores")]
    if not facts:
        return []
    keys = [k for k in RULE_COUNTS if any(k in f for f in facts)]
    means = [float(np.mean([f.get(k, 0) for f in facts])) for k in keys]
    return ["<h2>too_few_negatives: candidates left after each rule (mean)</h2>" + table(keys, [means])]


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    files = manifest["outputs"].get("data", [])
    columns = ["query_id", "query", "positive", "positive_score", "negatives", "negative_ranks", "negative_scores",
               "source"]
    rows = read_rows(root, files, columns)
    extra = manifest.get("extra", {})
    parts = [f"<h2>Hard negatives</h2><p id='totals'>{len(rows)} (query, positive) rows, "
             f"{len({r['query_id'] for r in rows})} queries, miner <code>{esc(extra.get('miner'))}</code>, "
             f"search {esc(extra.get('search'))}</p>"]
    encode = extra.get("encode", {})
    if encode:
        parts.append("<h2>Embeddings (cache)</h2>" + table(
            ["collection", "rows", "dim", "shards encoded", "shards cached", "encode s", "cache key"],
            [[name, e["rows"], e["dim"], e["encoded_shards"], e["cached_shards"], e["encode_s"], e["cache_key"]]
             for name, e in encode.items()]))
    if rows:
        pos = np.asarray([r["positive_score"] for r in rows], dtype=np.float64)
        neg = np.asarray([s for r in rows for s in r["negative_scores"]], dtype=np.float64)
        ranks = np.asarray([k for r in rows for k in r["negative_ranks"]], dtype=np.int64)
        low, high = float(min(pos.min(), neg.min())), float(max(pos.max(), neg.max()))
        parts.append(image(_hist(out / "scores.png", {"positives": pos, "negatives": neg},
                                 title="Scores: positives vs mined negatives", xlabel="score",
                                 bins=np.linspace(low, high + 1e-9, 41)), "Score distributions"))
        parts.append(image(_hist(out / "ranks.png", {"negatives": ranks}, title="Ranks of the negatives",
                                 xlabel="rank (own positives removed)",
                                 bins=np.arange(ranks.min(), ranks.max() + 2) - 0.5), "Rank histogram"))
        by_source: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_source[r["source"]].append(r)
        parts.append("<h2>Per source</h2>" + table(
            ["source", "rows", "mean positive score", "mean negative score", "mean gap (positive - best negative)"],
            [[s, len(rs), float(np.mean([r["positive_score"] for r in rs])),
              float(np.mean([x for r in rs for x in r["negative_scores"]])),
              float(np.mean([r["positive_score"] - max(r["negative_scores"]) for r in rs]))]
             for s, rs in sorted(by_source.items())]))
        parts.append("<h2>Sample rows</h2>" + table(
            ["query", "positive (score)", "negatives (rank, score)"],
            [[short(r["query"]), f"{short(r['positive'], 200)} ({r['positive_score']:.3f})",
              "\n".join(f"#{k} {s:.3f} {short(t, 120)}" for t, k, s in
                        zip(r["negatives"], r["negative_ranks"], r["negative_scores"]))] for r in rows[:SAMPLE_ROWS]]))
    return parts + _drop_rules(root, manifest["outputs"].get("dropped", []))
