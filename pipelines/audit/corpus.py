"""Audit of a ``mgte corpus`` output: documents per language, lengths, drop reasons with
samples and their scores, eq. 1 sampling probabilities before and after alpha."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.audit.page import SAMPLES_PER_REASON, esc, image, read_rows, save_figure, table


def _plots(out: Path, docs, stats: list[dict], reasons: dict[str, int]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = {}
    langs = [s["lang"] for s in stats]

    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(langs) + 2), 4))
    ax.bar(langs, [s["docs"] for s in stats], color="#4C72B0")
    ax.set_yscale("log")
    ax.set_ylabel("kept documents (log)")
    ax.set_title("Documents per language")
    ax.tick_params(axis="x", rotation=90, labelsize=8)
    fig.tight_layout()
    save_figure(fig, out / "docs_per_language.png")
    files["docs_per_language"] = "docs_per_language.png"
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    chars = np.asarray(docs["n_chars"].to_pylist() or [0])
    axes[0].hist(np.log10(np.maximum(chars, 1)), bins=40, color="#55A868")
    axes[0].set_xlabel("log10 characters per document")
    axes[0].set_ylabel("documents")
    axes[0].set_title("Document length (all languages)")
    top = langs[:8]
    lang_col = docs["lang"].to_pylist()
    for lang in top:
        lengths = [c for c, lg in zip(chars, lang_col) if lg == lang]
        if lengths:
            axes[1].hist(np.log10(np.maximum(lengths, 1)), bins=25, histtype="step", label=lang)
    axes[1].set_xlabel("log10 characters per document")
    axes[1].set_title("Length by language (largest 8)")
    if top:
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "length_histograms.png")
    files["length_histograms"] = "length_histograms.png"
    plt.close(fig)

    items = sorted(reasons.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#C44E52")
    ax.set_xlabel("dropped records")
    ax.set_title("Drop reasons")
    fig.tight_layout()
    save_figure(fig, out / "drop_reasons.png")
    files["drop_reasons"] = "drop_reasons.png"
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(langs) + 2), 4))
    x = np.arange(len(langs))
    alpha = stats[0]["alpha"] if stats else 0.5
    ax.bar(x - 0.2, [s["p"] for s in stats], width=0.4, label="p_i (natural)")
    ax.bar(x + 0.2, [s["q"] for s in stats], width=0.4, label=f"q_i (alpha={alpha})")
    ax.set_xticks(x, langs, rotation=90, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("sampling probability (log)")
    ax.set_title("Language sampling before and after alpha (mGTE eq. 1)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "sampling.png")
    files["sampling"] = "sampling.png"
    plt.close(fig)
    return files


def _failed(scores: str | None) -> str:
    """``statistic = value (min|max threshold)`` of a quality drop, from its scores."""
    s = json.loads(scores) if scores else {}
    if "statistic" not in s:
        return ""
    return f"{s['statistic']} = {s['value']} ({s.get('bound', '')} {s['threshold']}, {s.get('profile', '')})"


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    """The corpus sections: plots, languages with eq. 1 probabilities, dropped samples with scores."""
    outputs = manifest["outputs"]
    docs = pq.read_table([root / f for f in outputs["data"]], columns=["lang", "n_chars"])
    stats = pq.read_table(root / outputs["lang_stats"][0]).to_pylist()
    reasons = dict(manifest["dropped_by_reason"])
    plots = _plots(out, docs, stats, reasons)
    parts = [image(plots[key], title) for key, title in (
        ("docs_per_language", "Documents per language"), ("length_histograms", "Lengths"),
        ("drop_reasons", "Drop reasons"), ("sampling", "Sampling probabilities"))]
    parts.append("<h2>Languages</h2>" + table(
        ["lang", "docs", "chars", "tokens", "p", "q"],
        [[s["lang"], s["docs"], s["chars"], s["tokens"], float(s["p"]), float(s["q"])] for s in stats]))
    previous = manifest.get("extra", {}).get("previous", [])
    if outputs.get("lang_stats_cumulative"):
        cumulative = pq.read_table(root / outputs["lang_stats_cumulative"][0]).to_pylist()
        parts.append(f"<h2>Incremental build: {len(previous)} previous build(s)</h2>" + table(
            ["previous build", "finished", "kept", "config hash"],
            [[b["path"], b["finished"], b["kept"], b["config_hash"]] for b in previous])
            + "<h3>Cumulative languages (eq. 1 over every build)</h3>" + table(
            ["lang", "docs", "chars", "p", "q"],
            [[s["lang"], s["docs"], s["chars"], float(s["p"]), float(s["q"])] for s in cumulative]))
    rows = read_rows(root, outputs["dropped"],
                     ["id", "reason", "lang", "lang_score", "duplicate_of", "scores", "path", "line", "text"])
    parts.append("<h2>Samples per drop reason</h2>")
    for reason in sorted(reasons):
        sample = [r for r in rows if r["reason"] == reason][:SAMPLES_PER_REASON]
        parts.append(f"<h3>{esc(reason)} ({reasons[reason]})</h3>" + table(
            ["id", "lang", "duplicate of", "statistic (threshold)", "where", "text"],
            [[r["id"], f"{r['lang']} {round(r['lang_score'] or 0, 3)}", r["duplicate_of"], _failed(r["scores"]),
              f"{Path(r['path']).name}:{r['line']}", (r["text"] or "")[:600]] for r in sample]))
    return parts
