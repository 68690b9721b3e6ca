"""What every audit page has: header, the counts invariant, dropped_by_reason, dropped and
quarantine samples, the manifest; plus small table and plot helpers shared by the stage reports.

A stage report (corpus.py, shards.py, pairs.py, train.py, evaluation.py) adds only its own
sections between :func:`head` and :func:`tail`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow.parquet as pq

from foundation.ledger import atomic_write, atomic_write_bytes

SAMPLES_PER_REASON = 3
QUARANTINE_ROWS = 50
# Everything fits the page (docs/audit.md): images scale down to the page width, tables scroll
# inside their own box, long words (paths, hashes, URLs) wrap anywhere; no width is fixed.
IMG_STYLE = "max-width:100%;height:auto"
MAX_FIG_INCHES = 12  # widest plot: 1320 px at DPI; the page scales it down further (IMG_STYLE)
DPI = 110
STYLE = ("<meta name='viewport' content='width=device-width,initial-scale=1'>"
         "<style>body{font-family:sans-serif;margin:2em;max-width:1200px;overflow-wrap:anywhere}"
         f"img{{{IMG_STYLE}}}.scroll{{overflow-x:auto;max-width:100%}}table{{border-collapse:collapse}}"
         "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;vertical-align:top}"
         # a header word is never broken (`lang` as `lan`/`g` in a squeezed table): its box scrolls instead
         "th{overflow-wrap:normal}"
         ".bad{color:#b00;font-weight:bold}pre{white-space:pre-wrap;max-height:9em;overflow:auto;margin:0}"
         "details{margin:.3em 0}summary{cursor:pointer}</style>")


class Top(str):
    """A part of a stage report that goes to the top of the page, under the title (e.g. warnings)."""


def esc(value) -> str:
    return html.escape(str(value)) if value is not None else ""


def short(value, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def table(headers: Sequence[str], rows: Iterable[Sequence]) -> str:
    """An HTML table; cells are escaped, strings longer than a line go in <pre>."""
    def cell(v):
        if isinstance(v, float):
            return f"<td>{v:.4f}</td>"
        text = esc(v if isinstance(v, (str, int)) or v is None else short(v))
        return f"<td><pre>{text}</pre></td>" if len(text) > 80 else f"<td>{text}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return ("<div class='scroll'><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>" + body
            + "</table></div>")


def read_rows(root: Path, rels: Iterable[str], columns: Sequence[str] | None = None, limit: int | None = None) -> list[dict]:
    """Rows of the listed parquet files (only ``columns`` that exist), at most ``limit``."""
    rows: list[dict] = []
    for rel in rels:
        pf = pq.ParquetFile(root / rel)
        cols = [c for c in columns if c in pf.schema_arrow.names] if columns else None
        rows += pf.read(columns=cols).to_pylist()
        if limit is not None and len(rows) >= limit:
            return rows[:limit]
    return rows


def head(kind: str, root: Path, manifest: dict, top: Sequence[str] = ()) -> list[str]:
    """Title, identity, ``top`` (a report's :class:`Top` parts) and the accounting: counts with the
    invariant checked, drop reasons."""
    counts, reasons = manifest["counts"], manifest["dropped_by_reason"]
    total = counts["kept"] + counts["dropped"] + counts["quarantined"]
    holds = counts["input"] == total
    by_reason = sum(reasons.values())
    return [
        f"<!doctype html><html><head><meta charset='utf-8'><title>mgte {esc(kind)} audit</title>{STYLE}</head><body>",
        f"<h1>{esc(kind)} audit: {esc(root)}</h1>",
        f"<p>stage <code>{esc(manifest['stage'])}</code>, config hash <code>{esc(manifest['config_hash'])}</code>, "
        f"code {esc(manifest.get('code_version'))}, started {esc(manifest.get('started'))}, "
        f"finished {esc(manifest.get('finished'))}</p>",
        *top,
        "<h2>Accounting</h2>" + table(list(counts), [list(counts.values())]),
        f"<p id='invariant'>input = kept + dropped + quarantined: "
        + (f"holds ({counts['input']} = {counts['kept']} + {counts['dropped']} + {counts['quarantined']})" if holds
           else f"<span class='bad'>BROKEN ({counts['input']} != {total})</span>") + "</p>",
        f"<p>dropped_by_reason sums to dropped: "
        + (f"holds ({by_reason})" if by_reason == counts["dropped"]
           else f"<span class='bad'>BROKEN ({by_reason} != {counts['dropped']})</span>") + "</p>",
        "<h2>Dropped by reason</h2>"
        + (table(["reason", "records"], sorted(reasons.items(), key=lambda kv: -kv[1])) if reasons else "<p>none</p>"),
    ]


def dropped_samples(root: Path, manifest: dict, skip: Sequence[str] = ("input_ids",)) -> list[str]:
    """Up to SAMPLES_PER_REASON dropped rows per reason, every column but ``skip``."""
    reasons = manifest["dropped_by_reason"]
    files = manifest["outputs"].get("dropped", [])
    if not reasons or not files:
        return []
    parts = ["<h2>Samples per drop reason</h2>"]
    rows = read_rows(root, files)
    for reason in sorted(reasons):
        sample = [r for r in rows if r.get("reason") == reason][:SAMPLES_PER_REASON]
        cols = [c for c in (sample[0] if sample else {}) if c not in skip]
        parts.append(f"<h3>{esc(reason)} ({reasons[reason]})</h3>"
                     + table(cols, [[short(r[c]) if isinstance(r[c], str) else r[c] for c in cols] for r in sample]))
    return parts


def quarantine(root: Path, manifest: dict) -> list[str]:
    """The first QUARANTINE_ROWS quarantined records: where, field, error, raw."""
    files = manifest["outputs"].get("quarantine", [])
    n = manifest["counts"]["quarantined"]
    rows = read_rows(root, files, limit=QUARANTINE_ROWS) if files else []
    if not rows:
        return [f"<h2>Quarantine ({n})</h2><p>{'none' if not n else 'no quarantine files listed'}</p>"]
    return [f"<h2>Quarantine ({n}; first {len(rows)})</h2>" + table(
        ["where", "field", "error", "raw"],
        [[f"{Path(str(q.get('path', ''))).name}:{q.get('line', q.get('row', ''))}", q.get("field"), q.get("error"),
          short(q.get("raw") or "", 300)] for q in rows])]


def tail(manifest: dict) -> list[str]:
    shown = {k: v for k, v in manifest.items() if k not in ("config",)}
    return ["<h2>Manifest</h2><pre>" + esc(json.dumps(shown, indent=1, default=str)) + "</pre>",
            "<h2>Config</h2><pre>" + esc(json.dumps(manifest.get("config"), indent=1, default=str)) + "</pre>",
            "</body></html>"]


def image(src: str, title: str) -> str:
    return f"<h2>{esc(title)}</h2><img src='{esc(src)}' alt='{esc(title)}' style='{IMG_STYLE}'>"


def write_page(out: Path, parts: list[str]) -> Path:
    page = out / "index.html"
    atomic_write_bytes(page, "\n".join(parts).encode("utf-8"))
    return page


def save_figure(fig, path: Path) -> None:
    """A plot as PNG, through the one atomic writer."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_width(n: int, per: float = 0.28, extra: float = 2, least: float = 6) -> float:
    """Inches for a plot of ``n`` categories: ``per`` each plus ``extra``, within [least, MAX_FIG_INCHES]."""
    return min(MAX_FIG_INCHES, max(least, per * n + extra))


def label_size(n: int, width: float, per: float = 0.28) -> float:
    """Tick label points that fit ``n`` labels across ``width`` inches (8 when they have room)."""
    return max(4.0, min(8.0, 8.0 * (width - 2) / (per * n))) if n else 8.0


def bar_plot(path: Path, labels: Sequence[str], values: Sequence[float], *, title: str, ylabel: str,
             log: bool = False) -> str:
    plt = pyplot()
    width = fig_width(len(labels))
    fig, ax = plt.subplots(figsize=(width, 4))
    ax.bar(list(labels), list(values), color="#4C72B0")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=90, labelsize=label_size(len(labels), width))
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name
