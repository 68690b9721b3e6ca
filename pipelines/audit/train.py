"""Audit of a ``mgte train *`` output: loss, learning rate, skipped (non-finite) steps and
throughput over steps from ``metrics.jsonl``; the final model directory; the checkpoints kept.

``metrics.jsonl`` is appended to by a resumed run, so a step may appear twice; the last line of
a step wins, and the repeats are reported (they show where the run was resumed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from foundation.errors import MgteError
from pipelines.audit.page import esc, image, pyplot, save_figure, table

# (plot file, title, metric keys drawn on it)
PLOTS = (("loss.png", "Loss", ("loss", "loss_avg")), ("lr.png", "Learning rate", ("lr",)),
         ("skipped.png", "Skipped steps (non-finite loss or gradients, cumulative)", ("nonfinite_skipped",)),
         ("throughput.png", "Throughput (tokens/s)", ("tokens_per_s",)),
         ("accuracy.png", "Accuracy", ("mlm_accuracy", "accuracy")), ("grad_norm.png", "Gradient norm", ("grad_norm",)))


def _number(value):
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)  # non-finite values are written as "nan" / "inf"
        except ValueError:
            return None
    return None


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """(rows by step, the last line of each step winning; number of repeated steps)."""
    by_step: dict[int, dict] = {}
    repeats = 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MgteError(f"{path}:{n}: not a metrics line ({exc}); the file is damaged") from None
        repeats += step in by_step
        by_step[step] = row
    return [by_step[s] for s in sorted(by_step)], repeats


def _plot(path: Path, rows: list[dict], keys: tuple[str, ...], title: str) -> str | None:
    series = {k: [(r["step"], _number(r.get(k))) for r in rows if _number(r.get(k)) is not None] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=key)
    ax.set_xlabel("step")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path.name


def _listing(root: Path) -> list[list]:
    return [[str(p.relative_to(root)), p.stat().st_size] for p in sorted(root.rglob("*")) if p.is_file()]


def report(root: Path, manifest: dict, out: Path) -> list[str]:
    extra = manifest.get("extra") or {}
    metrics = root / "metrics.jsonl"
    rows, repeats = read_metrics(metrics) if metrics.is_file() else ([], 0)
    parts = [f"<h2>Training</h2><p id='steps'>{len(rows)} logged steps"
             + (f", last step {rows[-1]['step']}" if rows else "") + f", manifest steps {esc(extra.get('steps'))}"
             + (f", {repeats} steps logged twice (resumed runs)" if repeats else "") + "</p>"]
    if not rows:
        parts.append("<p class='bad'>no metrics.jsonl (or it is empty)</p>")
    for name, title, keys in PLOTS:
        made = _plot(out / name, rows, keys, title) if rows else None
        if made:
            parts.append(image(made, title))
    if rows:
        first, last = rows[0], rows[-1]
        keys = [k for k in last if k not in ("time",)]
        skipped = _number(last.get("nonfinite_skipped"))
        losses = [_number(r.get("loss")) for r in rows]
        nonfinite = sum(1 for v in losses if v is None or not math.isfinite(v))
        parts.append(f"<p id='skipped'>skipped steps (non-finite): {int(skipped) if skipped is not None else 'n/a'}; "
                     f"logged non-finite losses: {nonfinite}</p>")
        parts.append("<h3>First and last logged step</h3>" + table(keys, [[first.get(k) for k in keys],
                                                                          [last.get(k) for k in keys]]))
    model = root / "model"
    parts.append("<h2>Final model</h2>" + (table(["file", "bytes"], _listing(model)) if model.is_dir()
                                            else "<p class='bad'>no model/ directory</p>"))
    ckpts = root / "checkpoints"
    found = sorted(p for p in ckpts.iterdir() if p.is_dir()) if ckpts.is_dir() else []
    parts.append(f"<h2>Checkpoints ({len(found)})</h2>" + (table(
        ["checkpoint", "files", "bytes"],
        [[p.name, len(_listing(p)), sum(size for _, size in _listing(p))] for p in found]) if found else "<p>none</p>"))
    return parts
