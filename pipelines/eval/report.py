"""HTML report of an evaluation (and a comparison of several), with matplotlib PNG plots.

``write_report(dir, metrics)`` -> ``report.html`` + ``plots/ndcg_per_language.png`` (nDCG@10 per
language, one bar per method) + ``plots/overall.png`` (every metric per method).
``write_comparison({name: eval_dir}, out)`` -> ``comparison.html`` + ``plots/compare_ndcg.png``:
several models' evaluations (e.g. the DAG's encoders beside all-MiniLM-L6-v2 and BM25) side by side.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Mapping, Sequence

from pipelines.eval.metrics import MEASURES
from foundation.ledger import atomic_write_bytes

METHOD_ORDER = ("dense", "sparse", "hybrid", "rerank", "bm25")
COLORS = {"dense": "#1f77b4", "sparse": "#ff7f0e", "hybrid": "#2ca02c", "rerank": "#d62728", "bm25": "#7f7f7f"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def grouped_bars(path: Path, groups: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str,
                 ylabel: str, colors: Mapping[str, str] | None = None) -> None:
    """One cluster of bars per group (x axis), one bar per series."""
    plt = _plt()
    n = max(len(series), 1)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(groups) * max(n, 2) / 2 + 2), 4.2))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width=width, label=name, color=(colors or {}).get(name))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=45 if len(groups) > 8 else 0, ha="right" if len(groups) > 8 else "center")
    ax.set_ylim(0, 1.0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _save(fig, path)
    plt.close(fig)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(v):
        if v is None:
            return "-"
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = ("<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
          "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
          "td:first-child{text-align:left}img{max-width:100%}</style>")


def write_report(root: Path, metrics: dict) -> list[str]:
    """report.html and its plots for one evaluation; returns the files written (relative)."""
    root = Path(root)
    methods = [m for m in METHOD_ORDER if m in metrics["methods"]]
    langs = sorted({lang for m in methods for lang in metrics["methods"][m]["per_language"]})
    ndcg = {m: [metrics["methods"][m]["per_language"].get(lang, {}).get("ndcg@10", 0.0) for lang in langs]
            for m in methods}
    grouped_bars(root / "plots/ndcg_per_language.png", langs, ndcg, colors=COLORS, ylabel="nDCG@10",
                 title=f"nDCG@10 per language - {metrics['name']}")
    grouped_bars(root / "plots/overall.png", list(MEASURES),
                 {m: [metrics["methods"][m][k] for k in MEASURES] for m in methods}, colors=COLORS,
                 ylabel="score", title=f"All queries - {metrics['name']}")
    overall = _table(["method", *MEASURES, "queries", "queries/s"],
                     [[m + (" (final: run.trec)" if m == metrics["final_method"] else ""),
                       *[metrics["methods"][m][k] for k in MEASURES], metrics["methods"][m]["n_queries"],
                       metrics["queries_per_s"].get(m, "")] for m in methods] + _alone_rows(metrics, "rerank", ""))
    per_lang = _table(["language", "queries", *methods],
                      [[lang, metrics["methods"][methods[0]]["per_language"].get(lang, {}).get("n_queries", 0),
                        *[ndcg[m][i] for m in methods]] for i, lang in enumerate(langs)])
    skipped = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in metrics["skipped"].items())
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>mgte eval - {html.escape(metrics['name'])}"
            f"</title>{_STYLE}</head><body><h1>mgte eval: {html.escape(metrics['name'])}</h1>"
            f"<p>model: <code>{html.escape(str(metrics['model']))}</code>; reranker: "
            f"<code>{html.escape(str(metrics['reranker']))}</code>; final method: <b>{metrics['final_method']}</b>"
            f"</p><h2>All queries</h2>{overall}<img src='plots/overall.png' alt='overall'>"
            f"<h2>nDCG@10 per language</h2><img src='plots/ndcg_per_language.png' alt='per language'>{per_lang}"
            f"<h2>Not run</h2><ul>{skipped or '<li>none</li>'}</ul>"
            f"<h2>Data</h2><pre>{html.escape(json.dumps(metrics['data'], indent=1))}</pre>"
            f"<h2>Truncation</h2><pre>{html.escape(json.dumps(metrics['truncated'], indent=1))}</pre>"
            f"<p><small>{html.escape(metrics['semantics'])}</small></p></body></html>")
    atomic_write_bytes(root / "report.html", page.encode())
    return ["report.html", "plots/ndcg_per_language.png", "plots/overall.png"]


def _alone_rows(metrics: dict, name: str, *tail) -> list[list]:
    """The cross-encoder's own order when the reranked list was fused with the first stage."""
    fusion = metrics.get("rerank_fusion")
    if not fusion or "reranker_alone" not in fusion:
        return []
    alone = fusion["reranker_alone"]
    return [[f"{name} = {1 - fusion['first_stage_weight']:g} cross-encoder + {fusion['first_stage_weight']:g} "
             f"{fusion.get('first_stage') or 'first stage'} (z-scores); cross-encoder alone:",
             *[alone[k] for k in MEASURES], metrics["methods"]["rerank"]["n_queries"], *tail]]


def write_comparison(evals: Mapping[str, str | Path], out: str | Path) -> Path:
    """One page comparing several finished ``mgte eval`` outputs (``{label: directory}``).

    Every (model, method) becomes a row; BM25 appears once (it does not depend on the model).
    """
    out = Path(out)
    rows, series, langs = [], {}, set()
    bm25_done = False
    for label, directory in evals.items():
        metrics = json.loads((Path(directory) / "metrics.json").read_text())
        for method in METHOD_ORDER:
            if method not in metrics["methods"] or (method == "bm25" and bm25_done):
                continue
            name = "bm25" if method == "bm25" else f"{label} / {method}"
            bm25_done |= method == "bm25"
            res = metrics["methods"][method]
            rows.append([name, *[res[k] for k in MEASURES], res["n_queries"]])
            series[name] = res["per_language"]
            if method == "rerank":
                rows += _alone_rows(metrics, name)
            langs |= set(res["per_language"])
    langs_sorted = sorted(langs)
    grouped_bars(out / "plots/compare_ndcg.png", langs_sorted,
                 {n: [pl.get(lang, {}).get("ndcg@10", 0.0) for lang in langs_sorted] for n, pl in series.items()},
                 ylabel="nDCG@10", title="nDCG@10 per language")
    per_language = [[name, *[pl.get(lang, {}).get("ndcg@10") for lang in langs_sorted]] for name, pl in series.items()]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>mgte eval comparison</title>{_STYLE}"
            f"</head><body><h1>Evaluation: models side by side</h1>"
            f"{_table(['model / method', *MEASURES, 'queries'], rows)}"
            f"<h2>nDCG@10 per language</h2>{_table(['model / method', *langs_sorted], per_language)}"
            f"<img src='plots/compare_ndcg.png' alt='nDCG@10 per language'>"
            f"<ul>{''.join(f'<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>' for k, v in evals.items())}"
            f"</ul></body></html>")
    atomic_write_bytes(out / "comparison.html", page.encode())
    return out / "comparison.html"


def record_in_model_cards(evals: Mapping[str, str | Path], within: str | Path) -> list[Path]:
    """Held-out metrics into the model card of every mgte model (one with ``checksums.json``) under
    ``within`` that an evaluation in ``evals`` ({label: eval output}) used: dense / sparse / hybrid
    on the embedding model's card, rerank on the reranker's (:func:`model.card.add_evaluation`).
    Models elsewhere (a bundled or a user's model) are never written to."""
    from foundation.ledger import read_manifest
    from model.card import add_evaluation
    from model.files import CHECKSUMS
    from pipelines.embedding.resolve import resolve_model_dir

    within = Path(within).resolve()
    updated = []
    for label, directory in evals.items():
        cfg = read_manifest(directory)["config"]
        methods = json.loads((Path(directory) / "metrics.json").read_text())["methods"]
        data = Path(str(cfg["input"][0])).name if cfg.get("input") else "?"
        for key, used in (("model", ("dense", "sparse", "hybrid")), ("reranker", ("rerank",))):
            if not cfg.get(key) or not Path(str(cfg[key])).is_dir():
                continue
            model_dir = resolve_model_dir(str(cfg[key]))
            if not model_dir.is_relative_to(within) or not (model_dir / CHECKSUMS).is_file():
                continue
            picked = {m: methods[m] for m in used if m in methods}
            if picked and add_evaluation(model_dir, label, data, picked):
                updated.append(model_dir)
    return updated
