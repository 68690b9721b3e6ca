"""Audit of a ``mgte eval`` output: the measures of every method, nDCG@10 per language and
method, the methods not run and why, and the run files written."""

from __future__ import annotations

import json
from pathlib import Path

from foundation.errors import MgteError
from pipelines.audit.page import esc, fig_width, image, pyplot, save_figure, table

MEASURES = ("ndcg@10", "recall@10", "recall@20", "recall@100", "mrr@10", "map")


def _per_language_plot(path: Path, langs: list[str], methods: dict) -> str:
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(fig_width(len(langs), per=0.25 * max(1, len(methods))), 4))
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(langs))
    for i, (name, res) in enumerate(methods.items()):
        ax.bar(x + i * width, [res.get("per_language", {}).get(lg, {}).get("ndcg@10", 0.0) for lg in langs],
               width=width, label=name)
    ax.set_xticks(x + 0.4 - width / 2, langs, rotation=90, fontsize=8)
    ax.set_ylabel("nDCG@10")
    ax.set_title("nDCG@10 per language and method")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    path = root / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MgteError(f"{path}: missing; the eval output is incomplete (rerun mgte eval into a new --output)") from None
    except ValueError as exc:
        raise MgteError(f"{path}: not JSON ({exc})") from None
    methods = metrics.get("methods") or {}
    final = metrics.get("final_method") or (manifest.get("extra") or {}).get("final_method")
    parts = [f"<h2>Evaluation</h2><p id='final'>model <code>{esc(metrics.get('model'))}</code>, final method "
             f"<b>{esc(final)}</b>, nDCG@10 {esc(metrics.get('ndcg@10'))}, queries {esc(metrics.get('n_queries'))}</p>",
             "<h2>Methods</h2>" + table(["method", *MEASURES, "queries"],
                                        [[m, *[res.get(k) for k in MEASURES], res.get("n_queries")]
                                         for m, res in methods.items()])]
    langs = sorted({lg for res in methods.values() for lg in res.get("per_language", {})})
    if langs:
        parts.append(image(_per_language_plot(out / "ndcg_per_language.png", langs, methods),
                           "nDCG@10 per language"))
        parts.append("<h2>nDCG@10 per language</h2>" + table(
            ["lang", *methods], [[lg, *[res.get("per_language", {}).get(lg, {}).get("ndcg@10") for res in methods.values()]]
                                 for lg in langs]))
    skipped = metrics.get("skipped") or {}
    parts.append("<h2>Methods not run</h2>" + (table(["method", "why"], sorted(skipped.items())) if skipped
                                               else "<p>none</p>"))
    runs = [root / rel for rel in manifest["outputs"].get("runs", [])] or [root / "run.trec"]
    parts.append("<h2>Run files</h2>" + table(
        ["file", "lines", "queries"],
        [[str(p.relative_to(root)), *_trec_size(p)] for p in runs]))
    return parts


def _trec_size(path: Path) -> list:
    if not path.is_file():
        return ["missing", ""]
    lines = path.read_text(encoding="utf-8").splitlines()
    return [len(lines), len({line.split()[0] for line in lines if line.strip()})]
