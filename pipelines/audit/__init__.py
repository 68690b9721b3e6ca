"""``mgte audit DIR``: an HTML page (``DIR/audit/index.html`` + PNGs) for any finished stage output.

Every page shows the counts invariant, the dropped_by_reason table, dropped and quarantine
samples and the manifest (page.py); the manifest's ``stage`` picks the stage's own sections:
corpus, mlm-shards, pairs, mine (scores, ranks), train-* (loss, learning rate, skipped steps, throughput over steps;
model and checkpoints), eval (metrics per method and per language). A stage without its own
sections (a newer one) gets the common page. A directory that is no finished stage output is
refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from foundation.errors import MgteError, UsageError
from foundation.ledger import stage_output_files
from pipelines.audit import corpus, evaluation, mine, pairs, shards, train
from pipelines.audit.page import Top, dropped_samples, head, quarantine, tail, write_page

# manifest "stage" -> (title, module with report(root, manifest, out) -> [html parts])
REPORTS = {"corpus": ("Corpus", corpus), "mlm-shards": ("MLM shards", shards), "pairs": ("Pairs", pairs),
           "eval": ("Evaluation", evaluation), "mine": ("Hard negatives", mine)}
KINDS = "corpus, mlm-shards, pairs, mine, train mlm/cpt/..., eval"


def _manifest(root: Path) -> dict:
    """The manifest of a finished stage output, or a one-line refusal saying what is missing."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory; audit needs the output directory of a finished mgte stage "
                         f"({KINDS})")
    missing = [name for name in ("manifest.json", "_SUCCESS") if not (root / name).is_file()]
    if missing:
        raise UsageError(f"{root} is not a finished mgte stage output (no {' / '.join(missing)}); audit needs the "
                         f"output directory of a finished stage ({KINDS}); rerun the stage if it was interrupted")
    from storage_schemas import ManifestError, validate_manifest

    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        return validate_manifest(manifest, where=str(path))
    except (ValueError, ManifestError) as exc:
        raise MgteError(f"{path}: not a valid stage manifest ({' '.join(str(exc).split())})") from None


def _readable(root: Path, manifest: dict) -> dict:
    """The manifest with its ``outputs`` cut to the files the one reader of stage outputs allows
    (:func:`foundation.ledger.stage_output_files`: files of marked tasks, listed stage-level files)."""
    tops = sorted({f.split("/")[0] for files in manifest["outputs"].values() for f in files if "/" in f})
    ok = {str(p.relative_to(root)) for top in tops for p in stage_output_files(root, top, manifest=manifest)}
    return {**manifest, "outputs": {key: [f for f in files if "/" not in f or f in ok]
                                    for key, files in manifest["outputs"].items()}}


def write_audit(root: Path, out: Path | None = None, *, flag_share: float = corpus.FLAG_SHARE) -> Path:
    """Write the audit page of the stage output ``root`` into ``out`` (default ``root/audit``).
    ``flag_share``: the corpus audit flags a language that loses more than this share of its input
    to one filter."""
    root = Path(root)
    shown = _manifest(root)
    manifest = _readable(root, shown)
    stage = str(manifest["stage"])
    if stage.startswith("train") or (root / "metrics.jsonl").is_file():
        title, module = f"Training ({stage})", train
    else:
        title, module = REPORTS.get(stage, (stage, None))
    out = Path(out) if out else root / "audit"
    out.mkdir(parents=True, exist_ok=True)
    own = (corpus.report(root, manifest, out, flag_share=flag_share) if module is corpus
           else module.report(root, manifest, out) if module else [])
    top = [part for part in own if isinstance(part, Top)]  # e.g. the corpus audit's flagged languages
    own = [part for part in own if not isinstance(part, Top)]
    samples = [] if module is corpus else dropped_samples(root, manifest)  # the corpus report has its own
    return write_page(out, head(title, root, manifest, top) + own + samples + quarantine(root, manifest) + tail(shown))


__all__ = ["write_audit"]
