"""Per-language clean retention and junk removal of `mgte corpus` against a truth file (issue 26).

    python benchmarks/corpus_thresholds.py                                    # web profile, bundled raw corpus
    python benchmarks/corpus_thresholds.py --set quality.thresholds={}        # without the per-language table
    python benchmarks/corpus_thresholds.py --input data/corpus/docs --truth data/corpus/docs_truth.jsonl \
        --set quality.profile=curated                                         # the documentation sample

Runs the stage (local engine, one process) with ``dags/configs/corpus/tiny.yaml`` plus the
``--set`` overrides on the input, then scores every record of the truth file:

* clean retention, per expected language: originals (``kind == original`` and ``expected_outcome
  == kept``) that reach ``data/``; the drop reasons of the others are counted per language;
  ``filter retention`` counts only the originals language ID passed as their own language (not
  dropped as ``lang_not_in_set`` / ``low_lang_score``, not read as another language): what the
  quality filters, with that language's thresholds, kept of them;
* junk removal: junk records (``kind == junk``) that do not reach ``data/`` (dropped or
  quarantined, for any reason).

Prints a markdown table and writes the numbers as JSON (``--out``). Uses only the stage's
public entry points, so the same script measures an older checkout (``PYTHONPATH=<checkout>``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
LID_REASONS = ("lang_not_in_set", "low_lang_score")


def _rows(sub: Path, columns: list[str]) -> list[dict]:
    return pq.read_table(sub).select(columns).to_pylist() if any(sub.rglob("*.parquet")) else []


def fates(out: Path) -> dict:
    """(file name, line or parquet row) -> ("kept" | reason, identified language)."""
    got = {}
    for r in _rows(out / "data", ["path", "line", "lang"]):
        got[(Path(r["path"]).name, r["line"])] = ("kept", r["lang"])
    for r in _rows(out / "dropped", ["path", "line", "reason", "lang"]):
        got[(Path(r["path"]).name, r["line"])] = (r["reason"], r["lang"])
    for r in _rows(out / "quarantine", ["path", "line", "error"]):
        got[(Path(r["path"]).name, r["line"])] = ("quarantined", None)
    return got


def score(truth: list[dict], got: dict) -> dict:
    clean = defaultdict(Counter)  # lang -> {"n", "kept", reason...}
    junk = Counter()
    junk_kept = []
    for t in truth:
        if t["scope"] != "record":
            continue
        fate, lang = got.get((t["file"], t["line"] if t["line"] is not None else t["row"]), ("missing", None))
        if t["kind"] == "original" and t["expected_outcome"] == "kept" and t["expected_lang"]:
            c = clean[t["expected_lang"]]
            c["n"] += 1
            c["kept" if fate == "kept" else f"drop:{fate}"] += 1
            if lang == t["expected_lang"] and fate not in LID_REASONS:  # reached the filters as its language
                c["seen"] += 1
                c["seen_kept"] += fate == "kept"
        elif t["kind"] == "junk":
            junk["n"] += 1
            if fate == "kept":
                junk_kept.append(f"{t['file']}:{t['line'] if t['line'] is not None else t['row']} ({t['junk_type']})")
            else:
                junk["removed"] += 1
    per_lang = {}
    for lang, c in sorted(clean.items()):
        per_lang[lang] = {"clean": c["n"], "kept": c["kept"], "retention": round(c["kept"] / c["n"], 4),
                          "lid_correct": c["seen"],
                          "filter_retention": round(c["seen_kept"] / c["seen"], 4) if c["seen"] else None,
                          "drops": dict(sorted((k[5:], v) for k, v in c.items() if k.startswith("drop:")))}
    n_clean = sum(v["clean"] for v in per_lang.values())
    n_kept = sum(v["kept"] for v in per_lang.values())
    return {"per_lang": per_lang, "clean": n_clean, "clean_kept": n_kept,
            "clean_retention": round(n_kept / max(1, n_clean), 4),
            "min_lang_retention": min((v["retention"] for v in per_lang.values()), default=None),
            "min_lang_filter_retention": min((v["filter_retention"] for v in per_lang.values()
                                              if v["filter_retention"] is not None), default=None),
            "junk": junk["n"], "junk_removed": junk["removed"],
            "junk_removal": round(junk["removed"] / max(1, junk["n"]), 4), "junk_kept": junk_kept}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", default=str(ROOT / "data" / "corpus" / "raw"))
    ap.add_argument("--truth", default=str(ROOT / "data" / "corpus" / "truth.jsonl"))
    ap.add_argument("--config", default=str(ROOT / "dags" / "configs" / "corpus" / "tiny.yaml"))
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()

    from foundation.config import load_config
    from pipelines.corpus import Config, run

    truth = [json.loads(line) for line in Path(args.truth).read_text(encoding="utf-8").splitlines()]
    with tempfile.TemporaryDirectory(prefix="mgte-thr-") as tmp:
        out = Path(tmp) / "out"
        cfg = load_config(Config, args.config, [f"input=['{args.input}']", f"output={out}", "engine=local",
                                                "progress=false", *args.sets])
        t0 = time.perf_counter()
        run(cfg)
        seconds = time.perf_counter() - t0
        result = score(truth, fates(out))
    result.update(seconds=round(seconds, 1), sets=args.sets, input=args.input)
    print("| lang | clean | kept | retention | LID correct | filter retention | drops |")
    print("|---|---|---|---|---|---|---|")
    for lang, v in result["per_lang"].items():
        drops = ", ".join(f"{k} {n}" for k, n in v["drops"].items())
        fr = "-" if v["filter_retention"] is None else f"{v['filter_retention']:.0%}"
        print(f"| {lang} | {v['clean']} | {v['kept']} | {v['retention']:.0%} | {v['lid_correct']} | {fr} | {drops} |")
    print(f"\nclean kept {result['clean_kept']}/{result['clean']} ({result['clean_retention']:.1%}), "
          f"lowest language {result['min_lang_retention']:.0%} (after language ID: "
          f"{result['min_lang_filter_retention']:.0%}); junk removed {result['junk_removed']}/{result['junk']} "
          f"({result['junk_removal']:.1%}); {seconds:.0f} s", file=sys.stderr)
    if result["junk_kept"]:
        print("junk kept: " + "; ".join(result["junk_kept"]), file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
