"""Audit of a ``mgte corpus`` output: languages that lose too much to one filter (at the top of the
page), the language x reason matrix (table and heat map, worst cells named), documents and tokens
per language, lengths, drop reasons with samples and their scores, eq. 1 sampling probabilities
before and after alpha, and kept and dropped examples per language and reason.

The matrix and its rules (which language a record is counted under, what flags) are in
:mod:`pipelines.audit.corpus_langs`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from pipelines.audit.corpus_langs import FLAG_SHARE, NOT_FLAGGED, QUARANTINED, LangMatrix, count_matrix, examples
from pipelines.audit.page import (SAMPLES_PER_REASON, Top, esc, fig_width, image, label_size, read_rows, save_figure,
                                  short, table)

EXAMPLES_PER_CELL = 2  # kept examples per language, dropped examples per (language, reason)
EXAMPLE_CHARS = 200
WORST_CELLS = 5


def _plots(out: Path, docs, stats: list[dict], reasons: dict[str, int]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files = {}
    langs = [s["lang"] for s in stats]

    width = fig_width(len(langs))
    fig, ax = plt.subplots(figsize=(width, 4))
    ax.bar(langs, [s["docs"] for s in stats], color="#4C72B0")
    ax.set_yscale("log")
    ax.set_ylabel("kept documents (log)")
    ax.set_title("Documents per language")
    ax.tick_params(axis="x", rotation=90, labelsize=label_size(len(langs), width))
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

    fig, ax = plt.subplots(figsize=(width, 4))
    x = np.arange(len(langs))
    alpha = stats[0]["alpha"] if stats else 0.5
    ax.bar(x - 0.2, [s["p"] for s in stats], width=0.4, label="p_i (natural)")
    ax.bar(x + 0.2, [s["q"] for s in stats], width=0.4, label=f"q_i (alpha={alpha})")
    ax.set_xticks(x, langs, rotation=90, fontsize=label_size(len(langs), width))
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


def _heatmap(path: Path, m: LangMatrix) -> str:
    """Share of each language's input (rows) dropped by each reason (columns); cells annotated in %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    langs, reasons = m.langs, m.reasons
    grid = np.array([[m.share(lang, reason) for reason in reasons] for lang in langs]) if reasons else np.zeros((1, 1))
    width = fig_width(len(reasons), per=0.42, extra=3)
    fig, ax = plt.subplots(figsize=(width, min(60.0, 0.24 * len(langs) + 2.8)))
    im = ax.imshow(grid, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(reasons)), reasons, rotation=90, fontsize=label_size(len(reasons), width - 1, per=0.42))
    ax.set_yticks(range(len(langs)), [f"{lang} ({m.inputs(lang)})" for lang in langs], fontsize=7)
    if len(langs) * len(reasons) <= 3000:
        for i, lang in enumerate(langs):
            for j, reason in enumerate(reasons):
                if m.dropped[(lang, reason)]:
                    ax.text(j, i, f"{100 * grid[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if grid[i, j] > 0.5 else "black")
    ax.set_title("Share of each language's input dropped by each reason (%)")
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _matrix_parts(m: LangMatrix, manifest: dict, out: Path, flag_share: float) -> list[str]:
    counts = manifest["counts"]
    flagged = m.flagged(flag_share)
    reasons = m.reasons
    top = (f"<h2 id='flagged'>Flagged languages ({len(flagged)})</h2><p>languages that lose more than "
           f"{_pct(flag_share)} of their input to one filter (<code>mgte audit --flag-share</code>; "
           f"{', '.join(NOT_FLAGGED)} never flag):</p>")
    top += table(["lang", "input", "filter", "dropped", "share"],
                 [[lang, total, reason, n, _pct(share)] for lang, cells in flagged.items()
                  for reason, share, n, total in cells]) if flagged else "<p>none</p>"
    worst = m.cells(skip=NOT_FLAGGED)[:WORST_CELLS]
    holds = m.total == counts["input"]
    parts = [Top(top), "<h2 id='matrix'>Languages x drop reasons</h2>"
             "<p>Each cell: the share of a language's input (kept + dropped records counted under it) that the "
             "reason dropped. A record is counted under the language the identifier gave it; records dropped "
             "before identification (<code>empty_text</code>, <code>too_long</code>) and quarantined records "
             "(<code>quarantined</code>) are counted under <code>und</code>. See docs/audit.md.</p>",
             f"<p id='matrix-total'>records in the matrix: {m.total}; manifest input: {counts['input']}: "
             + ("holds" if holds else "<span class='bad'>BROKEN</span>") + "</p>",
             "<p id='worst'>worst cells: " + ("; ".join(
                 f"<b>{esc(lang)}</b> {esc(reason)} {_pct(share)} ({n} of {total})"
                 for lang, reason, share, n, total in worst) or "none") + "</p>"]
    if reasons:
        parts.append(image(_heatmap(out / "lang_reason_heatmap.png", m),
                           "Heat map: share dropped per language and reason"))
    parts.append("<h3>Matrix (dropped records, share of the language's input)</h3>" + table(
        ["lang", "input", "kept", *reasons],
        [[lang, m.inputs(lang), m.kept[lang], *[f"{m.dropped[(lang, r)]} ({_pct(m.share(lang, r))})"
                                                 if m.dropped[(lang, r)] else "" for r in reasons]]
         for lang in m.langs]))
    return parts


def _example_parts(root: Path, outputs: dict, m: LangMatrix) -> list[str]:
    got = examples(root, outputs, m, EXAMPLES_PER_CELL)
    parts = [f"<h2 id='examples'>Examples per language</h2><p>up to {EXAMPLES_PER_CELL} kept records per language "
             f"and {EXAMPLES_PER_CELL} dropped records per language and reason, first {EXAMPLE_CHARS} characters</p>"]
    for lang in m.langs:
        reasons = [r for r in m.reasons if m.dropped[(lang, r)] and r != QUARANTINED]
        rows = [["kept", e["id"], short(e["text"], EXAMPLE_CHARS)] for e in got.get((lang, None), [])]
        rows += [[r, e["id"], short(e["text"], EXAMPLE_CHARS)] for r in reasons for e in got.get((lang, r), [])]
        dropped = sum(m.dropped[(lang, r)] for r in m.reasons)
        parts.append(f"<details><summary>{esc(lang)}: input {m.inputs(lang)}, kept {m.kept[lang]}, dropped "
                     f"{dropped}</summary>" + (table(["kept / reason", "id", "text"], rows) if rows else "<p>none</p>")
                     + "</details>")
    return parts


def report(root: Path, manifest: dict, out: Path, flag_share: float = FLAG_SHARE) -> list[str]:
    """The corpus sections: flagged languages (a :class:`Top` part), the language x reason matrix,
    plots, languages with tokens and eq. 1 probabilities, dropped samples with scores, examples."""
    outputs = manifest["outputs"]
    matrix = count_matrix(root, outputs)
    docs = pq.read_table([root / f for f in outputs["data"]], columns=["lang", "n_chars"])
    stats = pq.read_table(root / outputs["lang_stats"][0]).to_pylist()
    reasons = dict(manifest["dropped_by_reason"])
    plots = _plots(out, docs, stats, reasons)
    parts = _matrix_parts(matrix, manifest, out, flag_share)
    parts += [image(plots[key], title) for key, title in (
        ("docs_per_language", "Documents per language"), ("length_histograms", "Lengths"),
        ("drop_reasons", "Drop reasons"), ("sampling", "Sampling probabilities"))]
    tokenizer = (manifest.get("config") or {}).get("stats", {}).get("tokenizer")
    parts.append("<h2>Languages</h2>" + (f"<p>tokens: {esc(tokenizer)} tokens of the kept texts, counted at build "
                                         "time (no special tokens)</p>" if tokenizer else
                                         "<p>tokens: not counted (<code>stats.tokenizer</code> is null)</p>")
                 + table(["lang", "docs", "chars", "tokens", "tokens/doc", "p", "q"],
                         [[s["lang"], s["docs"], s["chars"], s["tokens"],
                           f"{s['tokens'] / s['docs']:.1f}" if s["tokens"] is not None and s["docs"] else None,
                           float(s["p"]), float(s["q"])] for s in stats]))
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
    return parts + _example_parts(root, outputs, matrix)
