"""Audit of a ``mgte pairs`` output: pairs per source and language, each source's eq. 1
probability and truncations, and sample pairs of every source."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.audit.page import bar_plot, esc, image, short, table

SAMPLE_PAIRS = 3


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    outputs = manifest["outputs"]
    per: Counter = Counter()
    samples: dict[str, list[dict]] = {}
    for rel in outputs.get("data", []):
        t = pq.read_table(root / rel, columns=["source", "lang", "query", "positive"])
        for source, lang in zip(t.column("source").to_pylist(), t.column("lang").to_pylist()):
            per[(source, lang)] += 1
        for row in t.slice(0, SAMPLE_PAIRS).to_pylist():
            if len(samples.setdefault(row["source"], [])) < SAMPLE_PAIRS:
                samples[row["source"]].append(row)
    by_source: Counter = Counter()
    for (source, _), n in per.items():
        by_source[source] += n
    sources = sorted(by_source, key=lambda s: -by_source[s])
    stats = {}
    if outputs.get("source_stats"):
        stats = {r["source"]: r for r in pq.read_table(root / outputs["source_stats"][0]).to_pylist()}
    parts = [f"<h2>Pairs</h2><p id='totals'>{sum(per.values())} pairs, {len(sources)} sources, "
             f"{len({lang for _, lang in per})} languages</p>"]
    if sources:
        parts.append(image(bar_plot(out / "pairs_per_source.png", sources, [by_source[s] for s in sources],
                                    title="Pairs per source", ylabel="pairs (log)", log=True), "Pairs per source"))
    parts.append("<h2>Sources</h2>" + table(
        ["source", "pairs", "p", "q (eq. 1)", "query truncated", "positive truncated"],
        [[s, by_source[s], stats.get(s, {}).get("p"), stats.get(s, {}).get("q"),
          stats.get(s, {}).get("query_truncated"), stats.get(s, {}).get("positive_truncated")] for s in sources]))
    parts.append("<h2>Pairs per source and language</h2>" + table(
        ["source", "lang", "pairs"], [[s, lang, n] for (s, lang), n in sorted(per.items(), key=lambda kv: (kv[0][0],
                                                                                                  str(kv[0][1])))]))
    parts.append("<h2>Sample pairs</h2>")
    for s in sources:
        parts.append(f"<h3>{esc(s)}</h3>" + table(["lang", "query", "positive"],
                                             [[r["lang"], short(r["query"]), short(r["positive"])]
                                              for r in samples.get(s, [])]))
    return parts
