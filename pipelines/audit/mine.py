"""Audit of a ``mgte mine`` output: positive vs negative score distributions (overall and per
source), the ranks the kept negatives came from, suspected false negatives (a negative scoring at or
above its own positive, listed with the texts), the gap to the positive per source, why (query,
positive) rows were dropped (per reason and source, the queries left with no row, how many
candidates passed each rule), the embedding cache use, and sample rows.

Besides the page, ``mine.json`` holds the same numbers (:func:`summary`) for scripts and for
``mgte audit diff`` (:mod:`pipelines.audit.diff`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from foundation.ledger import atomic_write_json
from pipelines.audit.page import esc, image, pyplot, read_rows, save_figure, short, table

SAMPLE_ROWS = 3
RULE_COUNTS = ("ranked", "in_window", "not_copy", "below_ratio", "below_margin", "passing")
COLUMNS = ["query_id", "query", "positive_id", "positive", "positive_score", "negative_ids", "negatives",
           "negative_ranks", "negative_scores", "negative_given", "source"]
FALSE_NEGATIVES_SHOWN = 20  # on the page; mine.json lists up to FALSE_NEGATIVES_LISTED
FALSE_NEGATIVES_LISTED = 1000
SOURCE_PLOTS = 12  # the largest sources get a score histogram each


def distribution(values) -> dict:
    """Count, mean and quantiles of a list of scores (None for the statistics of an empty one)."""
    a = np.asarray(values, dtype=np.float64)
    if not a.size:
        return {"n": 0, "mean": None, "min": None, "p10": None, "p50": None, "p90": None, "max": None}
    q = np.quantile(a, [0.1, 0.5, 0.9])
    return {"n": int(a.size), "mean": float(a.mean()), "min": float(a.min()), "p10": float(q[0]),
            "p50": float(q[1]), "p90": float(q[2]), "max": float(a.max())}


def false_negatives(rows: list[dict]) -> list[dict]:
    """Every (row, negative) whose score is at or above the row's positive score, the largest excess first."""
    found = []
    for r in rows:
        given = r.get("negative_given") or [k == 0 for k in r["negative_ranks"]]  # null: a table before the column
        for j, (score, rank) in enumerate(zip(r["negative_scores"], r["negative_ranks"])):
            if score >= r["positive_score"]:
                found.append({"query_id": r["query_id"], "positive_id": r.get("positive_id"), "source": r["source"],
                              "positive_score": r["positive_score"], "negative_id": r["negative_ids"][j],
                              "negative_score": score, "rank": rank, "given": bool(given[j]),
                              "excess": score - r["positive_score"], "query": r["query"],
                              "positive": r["positive"], "negative": r["negatives"][j]})
    found.sort(key=lambda f: (-f["excess"], f["query_id"], str(f["positive_id"]), f["rank"]))
    return found


def summary(rows: list[dict], dropped: list[dict]) -> dict:
    """The numbers of the page: per source (rows, queries, score distributions, gap, false
    negatives, drops), the rank histogram of the mined negatives, the given ones, the false
    negatives (texts cut to 300 characters), drops per reason and source, queries left with no row."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    fns = false_negatives(rows)
    fn_per_source = Counter(f["source"] for f in fns)
    drops = Counter((d.get("reason"), d.get("source")) for d in dropped)
    drops_per_source = Counter()
    for (_, source), n in drops.items():
        drops_per_source[source] += n
    sources = {}
    for s in sorted(set(by_source) | {src for src in drops_per_source if src is not None}):
        rs = by_source.get(s, [])
        sources[s] = {"rows": len(rs), "queries": len({r["query_id"] for r in rs}),
                      "dropped": drops_per_source.get(s, 0),
                      "positive": distribution([r["positive_score"] for r in rs]),
                      "negative": distribution([x for r in rs for x in r["negative_scores"]]),
                      "gap": distribution([r["positive_score"] - max(r["negative_scores"])
                                           for r in rs if r["negative_scores"]]),
                      "false_negatives": fn_per_source.get(s, 0)}
    ranks = Counter(k for r in rows for k in r["negative_ranks"])
    kept_queries = {r["query_id"] for r in rows}
    lost: dict[str, set] = defaultdict(set)
    for d in dropped:
        if d["query_id"] not in kept_queries:
            lost[d.get("reason")].add(d["query_id"])
    return {
        "rows": len(rows), "queries": len(kept_queries), "sources": sources,
        "rank_histogram": {str(k): n for k, n in sorted(ranks.items()) if k > 0},
        "given_negatives": ranks.get(0, 0),
        "false_negatives_total": len(fns),
        "false_negatives": [{k: (short(v) if isinstance(v, str) and k in ("query", "positive", "negative") else v)
                             for k, v in f.items()} for f in fns[:FALSE_NEGATIVES_LISTED]],
        "dropped_by_reason_and_source": [{"reason": reason, "source": source, "rows": n}
                                         for (reason, source), n in sorted(drops.items(), key=str)],
        "queries_without_rows_by_reason": {str(reason): len(q) for reason, q in sorted(lost.items(), key=str)},
    }


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


def _per_source_plot(path: Path, by_source: dict[str, list[dict]], bins) -> str:
    """One panel per source (the SOURCE_PLOTS largest): positive vs negative score histograms."""
    shown = sorted(by_source, key=lambda s: (-len(by_source[s]), s))[:SOURCE_PLOTS]
    cols = min(3, len(shown))
    nrows = (len(shown) + cols - 1) // cols
    plt = pyplot()
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, s in zip(axes.flat, shown):
        rs = by_source[s]
        ax.hist([r["positive_score"] for r in rs], bins=bins, alpha=0.55, label="positives")
        ax.hist([x for r in rs for x in r["negative_scores"]], bins=bins, alpha=0.55, label="negatives")
        ax.set_title(f"{s} ({len(rs)} rows)", fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name


def _drop_rules(dropped: list[dict]) -> list[str]:
    """Mean candidates left after each rule, over the too_few_negatives rows."""
    facts = [json.loads(r["scores"]) for r in dropped if r.get("reason") == "too_few_negatives" and r.get("scores")]
    if not facts:
        return []
    keys = [k for k in RULE_COUNTS if any(k in f for f in facts)]
    means = [float(np.mean([f.get(k, 0) for f in facts])) for k in keys]
    return ["<h2>too_few_negatives: candidates left after each rule (mean)</h2>" + table(keys, [means])]


def _dist_cells(d: dict) -> list:
    return [d["mean"], d["p10"], d["p50"], d["p90"]] if d["n"] else ["", "", "", ""]


def _sections(facts: dict) -> list[str]:
    parts = ["<h2>Per source: score distributions</h2>" + table(
        ["source", "rows", "queries", "dropped rows", "positives: mean", "p10", "p50", "p90", "negatives: mean",
         "p10", "p50", "p90", "mean gap (positive - best negative)", "suspected false negatives"],
        [[s, f["rows"], f["queries"], f["dropped"], *_dist_cells(f["positive"]), *_dist_cells(f["negative"]),
          f["gap"]["mean"] if f["gap"]["n"] else "", f["false_negatives"]] for s, f in facts["sources"].items()])]
    hist = facts["rank_histogram"]
    parts.append(f"<h2>Ranks of the kept negatives</h2><p id='ranks'>{sum(hist.values())} mined negatives over "
                 f"{len(hist)} ranks; {facts['given_negatives']} given by the input set (rank 0, not ranked)</p>"
                 + "<details><summary>negatives per rank</summary>"
                 + table(["rank", "negatives"], [[int(k), n] for k, n in hist.items()]) + "</details>")
    fns = facts["false_negatives"]
    parts.append(f"<h2>Suspected false negatives</h2><p id='false-negatives'>{facts['false_negatives_total']} "
                 f"negatives score at or above their own positive"
                 + (f"; the {min(len(fns), FALSE_NEGATIVES_SHOWN)} with the largest excess:" if fns else "") + "</p>")
    if fns:
        parts.append(table(["query", "positive (score)", "negative (rank, score)", "source"],
                           [[f"{f['query_id']}: {f['query']}", f"{f['positive']} ({f['positive_score']:.4f})",
                             f"{f['negative_id']} (#{f['rank']}{', given' if f['given'] else ''}, "
                             f"{f['negative_score']:.4f}): {f['negative']}", f["source"]]
                            for f in fns[:FALSE_NEGATIVES_SHOWN]]))
    drops = facts["dropped_by_reason_and_source"]
    lost = facts["queries_without_rows_by_reason"]
    parts.append("<h2>Dropped (query, positive) rows by reason and source</h2>"
                 + (table(["reason", "source", "rows"], [[d["reason"], d["source"], d["rows"]] for d in drops])
                    + "<p>Queries left with no row, by the reason of their drops: "
                    + (", ".join(f"{esc(r)} {n}" for r, n in lost.items()) or "none") + "</p>"
                    if drops else "<p>none</p>"))
    return parts


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    rows = read_rows(root, manifest["outputs"].get("data", []), COLUMNS)
    dropped = read_rows(root, manifest["outputs"].get("dropped", []), ["query_id", "reason", "source", "scores"])
    facts = summary(rows, dropped)
    atomic_write_json(out / "mine.json", facts)
    extra = manifest.get("extra", {})
    parts = [f"<h2>Hard negatives</h2><p id='totals'>{len(rows)} (query, positive) rows, "
             f"{facts['queries']} queries, miner <code>{esc(extra.get('miner'))}</code>, "
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
        low, high = float(min(pos.min(), neg.min(initial=pos.min()))), float(max(pos.max(), neg.max(initial=pos.max())))
        bins = np.linspace(low, high + 1e-9, 41)
        parts.append(image(_hist(out / "scores.png", {"positives": pos, "negatives": neg},
                                 title="Scores: positives vs mined negatives", xlabel="score", bins=bins),
                           "Score distributions"))
        by_source: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            by_source[r["source"]].append(r)
        parts.append(image(_per_source_plot(out / "scores_per_source.png", by_source, bins),
                           "Score distributions per source"))
        if ranks.size:
            parts.append(image(_hist(out / "ranks.png", {"negatives": ranks}, title="Ranks of the negatives",
                                     xlabel="rank (own positives removed; 0 = given by the set)",
                                     bins=np.arange(ranks.min(), ranks.max() + 2) - 0.5), "Rank histogram"))
    parts += _sections(facts)
    if rows:
        parts.append("<h2>Sample rows</h2>" + table(
            ["query", "positive (score)", "negatives (rank, score)"],
            [[short(r["query"]), f"{short(r['positive'], 200)} ({r['positive_score']:.3f})",
              "\n".join(f"#{k} {s:.3f} {short(t, 120)}" for t, k, s in
                        zip(r["negatives"], r["negative_ranks"], r["negative_scores"]))] for r in rows[:SAMPLE_ROWS]]))
    return parts + _drop_rules(dropped)
