"""``mgte audit DIR``: an HTML page with plots and samples of a finished corpus output."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pyarrow.parquet as pq

from foundation.ledger import read_manifest

SAMPLES_PER_REASON = 3


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
    fig.savefig(out / "docs_per_language.png", dpi=110)
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
    fig.savefig(out / "length_histograms.png", dpi=110)
    files["length_histograms"] = "length_histograms.png"
    plt.close(fig)

    items = sorted(reasons.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.35 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items], color="#C44E52")
    ax.set_xlabel("dropped records")
    ax.set_title("Drop reasons")
    fig.tight_layout()
    fig.savefig(out / "drop_reasons.png", dpi=110)
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
    fig.savefig(out / "sampling.png", dpi=110)
    files["sampling"] = "sampling.png"
    plt.close(fig)
    return files


def write_audit(corpus_dir: Path, out: Path | None = None) -> Path:
    """Write ``index.html`` + PNGs for a finished ``mgte corpus`` output; returns the page path."""
    manifest = read_manifest(corpus_dir)
    if manifest["stage"] != "corpus":
        raise ValueError(f"{corpus_dir}: audit reads corpus outputs, this is a '{manifest['stage']}' output")
    out = out or corpus_dir / "audit"
    out.mkdir(parents=True, exist_ok=True)
    outputs = manifest["outputs"]
    docs = pq.read_table([corpus_dir / f for f in outputs["data"]], columns=["lang", "n_chars"])
    stats = pq.read_table(corpus_dir / outputs["lang_stats"][0]).to_pylist()
    dropped = pq.read_table([corpus_dir / f for f in outputs["dropped"]],
                            columns=["id", "reason", "lang", "lang_score", "duplicate_of", "path", "line", "text"])
    quarantine = pq.read_table([corpus_dir / f for f in outputs["quarantine"]])
    reasons = dict(manifest["dropped_by_reason"])
    plots = _plots(out, docs, stats, reasons)

    def esc(v) -> str:
        return html.escape(str(v)) if v is not None else ""

    counts = manifest["counts"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>mgte corpus audit</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
        "pre{white-space:pre-wrap;max-height:9em;overflow:auto;margin:0}</style></head><body>",
        f"<h1>Corpus audit: {esc(corpus_dir)}</h1>",
        f"<p>config hash <code>{esc(manifest['config_hash'])}</code>, code {esc(manifest['code_version'])}, "
        f"finished {esc(manifest['finished'])}</p>",
        "<h2>Accounting</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in counts) + "</tr><tr>"
        + "".join(f"<td>{v}</td>" for v in counts.values()) + "</tr></table>",
        f"<p>input = kept + dropped + quarantined: "
        f"{counts['input'] == counts['kept'] + counts['dropped'] + counts['quarantined']}</p>",
    ]
    for key, title in (("docs_per_language", "Documents per language"), ("length_histograms", "Lengths"),
                       ("drop_reasons", "Drop reasons"), ("sampling", "Sampling probabilities")):
        parts.append(f"<h2>{title}</h2><img src='{plots[key]}' alt='{title}'>")
    parts.append("<h2>Languages</h2><table><tr><th>lang</th><th>docs</th><th>chars</th><th>tokens</th>"
                 "<th>p</th><th>q</th></tr>")
    for s in stats:
        parts.append(f"<tr><td>{esc(s['lang'])}</td><td>{s['docs']}</td><td>{s['chars']}</td><td>{esc(s['tokens'])}</td>"
                     f"<td>{s['p']:.4f}</td><td>{s['q']:.4f}</td></tr>")
    parts.append("</table><h2>Samples per drop reason</h2>")
    rows = dropped.to_pylist()
    for reason in sorted(reasons):
        sample = [r for r in rows if r["reason"] == reason][:SAMPLES_PER_REASON]
        parts.append(f"<h3>{esc(reason)} ({reasons[reason]})</h3><table><tr><th>id</th><th>lang</th>"
                     "<th>duplicate of</th><th>where</th><th>text</th></tr>")
        for r in sample:
            parts.append(f"<tr><td>{esc(r['id'])}</td><td>{esc(r['lang'])} {esc(round(r['lang_score'] or 0, 3))}</td>"
                         f"<td>{esc(r['duplicate_of'])}</td><td>{esc(Path(r['path']).name)}:{r['line']}</td>"
                         f"<td><pre>{esc((r['text'] or '')[:600])}</pre></td></tr>")
        parts.append("</table>")
    parts.append(f"<h2>Quarantine ({quarantine.num_rows})</h2><table><tr><th>where</th><th>field</th><th>error</th>"
                 "<th>raw</th></tr>")
    for q in quarantine.slice(0, 50).to_pylist():
        parts.append(f"<tr><td>{esc(Path(q['path']).name)}:{q['line']}</td><td>{esc(q['field'])}</td>"
                     f"<td>{esc(q['error'])}</td><td><pre>{esc((q['raw'] or '')[:300])}</pre></td></tr>")
    parts.append("</table><h2>Manifest</h2><pre>" + esc(json.dumps({k: v for k, v in manifest.items()
                                                                    if k not in ("config", "extra")}, indent=1))
                 + "</pre></body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
