"""Corpus build throughput and near-dup quality (issue 3), in one run.

    python benchmarks/corpus_build.py --copies 4 --out benchmarks/corpus_build.json

1. docs/s of `mgte corpus` (local, Beam, Ray engines; 1 and 2 workers) against a datatrove-only
   pipeline with the same blocks (JsonlReader -> FT176 LanguageFilter -> Gopher repetition ->
   Gopher quality -> C4 -> FineWeb -> MinHash signature/buckets/cluster/filter -> JsonlWriter) on
   the same input, as ratios.
2. Near-duplicate precision/recall of `mgte corpus` on the planted near-duplicates of the bundled
   corpus (data/corpus/truth.jsonl).

The input is the bundled corpus's well-formed JSONL files, repeated ``--copies`` times with the
words of each copy's documents shuffled (distinct documents: no shared word 5-grams, so not near
duplicates of each other; the same languages, words and lengths), so
both pipelines see identical, valid records. datatrove reads the same FT176 model: the bundled
lid.176.ftz is placed in datatrove's asset cache (no download).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "corpus" / "raw"
CLEAN_FILES = ["01-udhr-a.jsonl", "02-udhr-b.jsonl.gz", "04-kolaw-kobill.jsonl", "05-pydoc-topics.jsonl.gz",
               "07-web-mixed.jsonl", "08-web-near.jsonl.gz"]


def _lines(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def make_input(dst: Path, copies: int) -> int:
    """Write ``copies`` variants of the clean bundled files as plain JSONL; returns the doc count."""
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for c in range(copies):
        for name in CLEAN_FILES:
            out = dst / f"c{c}-{name.replace('.gz', '')}"
            with open(out, "w", encoding="utf-8") as fh:
                for rec in _lines(RAW / name):
                    words = rec["text"].split(" ")
                    if c:  # a seeded shuffle breaks the word 5-grams: a new document, not a near copy
                        random.Random(f"{c}-{n}").shuffle(words)
                    rec = {"id": f"{rec.get('id', n)}-c{c}", "text": " ".join(words), "source": rec.get("source", name)}
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    n += 1
    return n


def timed(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def run_mgte(inp: Path, out: Path, engine: str, workers: int) -> float:
    sets = [f"engine={engine}"]
    if engine == "beam":
        mode = "multi_processing" if workers > 1 else "in_memory"
        sets.append(f"beam.options=--runner=DirectRunner --direct_num_workers={workers} --direct_running_mode={mode}")
    if engine == "ray":
        sets.append(f"ray.num_cpus={workers}")
    if engine == "local":
        sets.append(f"local.workers={workers}")
    cmd = [sys.executable, "-m", "dags.cli", "corpus", "--config", "dags/configs/corpus/tiny.yaml", "--input",
           str(inp), "--output", str(out)]
    for s in sets:
        cmd += ["--set", s]
    return timed(cmd)


DATATROVE_SCRIPT = r'''
import sys, os, shutil
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from datatrove.pipeline.filters import (LanguageFilter, GopherRepetitionFilter, GopherQualityFilter,
                                        C4QualityFilter, FineWebQualityFilter)
from datatrove.pipeline.dedup import MinhashDedupSignature, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.utils.hashing import HashConfig

if __name__ == "__main__":
    inp, work, tasks, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cfg = MinhashConfig(n_grams=5, num_buckets=25, hashes_per_bucket=5, hash_config=HashConfig(precision=32))
    LANGS = sys.argv[5].split(",")
    filters = [
        JsonlReader(inp, glob_pattern="*.jsonl"),
        LanguageFilter(languages=LANGS, language_threshold=0.3),
        GopherRepetitionFilter(),
        GopherQualityFilter(min_doc_words=20, min_stop_words=None),
        C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=-1, min_words_per_line=-1),
        FineWebQualityFilter(),
        MinhashDedupSignature(output_folder=f"{work}/sigs", config=cfg),
    ]
    LocalPipelineExecutor(filters, tasks=tasks, workers=workers, logging_dir=f"{work}/logs1").run()
    LocalPipelineExecutor([MinhashDedupBuckets(input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=cfg)],
                          tasks=cfg.num_buckets, workers=workers, logging_dir=f"{work}/logs2").run()
    LocalPipelineExecutor([MinhashDedupCluster(input_folder=f"{work}/buckets", output_folder=f"{work}/remove_ids", config=cfg)],
                          tasks=1, logging_dir=f"{work}/logs3").run()
    LocalPipelineExecutor([
        JsonlReader(inp, glob_pattern="*.jsonl"),
        LanguageFilter(languages=LANGS, language_threshold=0.3),
        GopherRepetitionFilter(), GopherQualityFilter(min_doc_words=20, min_stop_words=None),
        C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=-1, min_words_per_line=-1),
        FineWebQualityFilter(),
        MinhashDedupFilter(input_folder=f"{work}/remove_ids"),
        JsonlWriter(f"{work}/out"),
    ], tasks=tasks, workers=workers, logging_dir=f"{work}/logs4").run()
'''


def seed_datatrove_lid() -> None:
    """Put the bundled FT176 model where datatrove's FT176LID looks, so it needs no download."""
    from datatrove.io import cached_asset_path_or_download  # noqa: F401  (resolves the cache dir)
    from datatrove.utils.lid import FT176LID
    from huggingface_hub import cached_assets_path
    from datatrove.io import strip_protocol

    from pipelines.corpus.lid import bundled_ft176_path

    folder = cached_assets_path(library_name="datatrove", namespace="lid", subfolder=FT176LID.MODEL_SUBFOLDER)
    target = os.path.join(folder, strip_protocol(FT176LID.MODEL_URL).replace("/", "_"))
    if not os.path.exists(target + ".completed"):
        shutil.copy(bundled_ft176_path(), target)
        Path(target + ".completed").write_text("")


def run_datatrove(inp: Path, work: Path, workers: int, tasks: int) -> float:
    from pipelines.corpus.langs import MGTE_LANGS

    seed_datatrove_lid()
    script = work.parent / "datatrove_pipeline.py"
    script.write_text(DATATROVE_SCRIPT)
    # FT176 labels: our 75 codes (zh, no, ...) are FT176 labels too
    return timed([sys.executable, str(script), str(inp), str(work), str(tasks), str(workers), ",".join(MGTE_LANGS)])


def near_dup_quality(tmp: Path) -> dict:
    """Precision/recall of near-duplicate removal on the planted pairs of the bundled corpus."""
    import pyarrow.parquet as pq

    out = tmp / "quality"
    subprocess.run([sys.executable, "-m", "dags.cli", "corpus", "--config", "dags/configs/corpus/tiny.yaml", "--input",
                    str(RAW), "--output", str(out), "--set", "engine=local"], cwd=ROOT, check=True, capture_output=True)
    truth = {(t["file"], t["line"] if t["line"] is not None else t["row"]): t
             for t in map(json.loads, (ROOT / "data/corpus/truth.jsonl").read_text().splitlines())}
    from pipelines.corpus.dedup import shingle_hashes

    dropped_rows = pq.read_table(out / "dropped").to_pylist()
    flagged = [r for r in dropped_rows if r["reason"] == "near_duplicate"]
    texts = {r["id"]: r["text"] for r in pq.read_table(out / "_work" / "candidates", columns=["id", "text"]).to_pylist()}

    def jaccard(a: str, b: str) -> float:
        sa, sb = set(shingle_hashes(a, 5).tolist()), set(shingle_hashes(b, 5).tolist())
        return len(sa & sb) / max(1, len(sa | sb))

    planted_tp = true_tp = 0
    for r in flagged:
        kind = truth[(Path(r["path"]).name, r["line"])]["kind"]
        planted = kind in ("near_duplicate", "exact_duplicate")
        planted_tp += planted
        # a flag is right when the pair really is near-duplicate: planted, or exact shingle Jaccard >= 0.6
        true_tp += planted or jaccard(texts[r["id"]], texts[r["duplicate_of"]]) >= 0.6
    planted_rows = [k for k, t in truth.items() if t["kind"] == "near_duplicate"]
    reasons = {(Path(r["path"]).name, r["line"]): r["reason"] for r in dropped_rows}
    found = sum(reasons.get(k) in ("near_duplicate", "exact_duplicate") for k in planted_rows)
    return {"flagged_near_duplicate": len(flagged), "precision": round(true_tp / max(1, len(flagged)), 4),
            "precision_planted_only": round(planted_tp / max(1, len(flagged)), 4),
            "planted": len(planted_rows), "recall": round(found / max(1, len(planted_rows)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--skip", nargs="*", default=[], help="runs to skip, e.g. ray-2 datatrove-1")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mgte-bench-"))
    try:
        inp = tmp / "input"
        n_docs = make_input(inp, args.copies)
        results: dict = {"docs": n_docs, "files": len(list(inp.iterdir())), "cpus": os.cpu_count(), "runs": {}}
        plan = [("local", 1), ("local", 2), ("beam", 1), ("beam", 2), ("ray", 1), ("ray", 2), ("datatrove", 1), ("datatrove", 2)]
        for engine, workers in plan:
            name = f"{engine}-{workers}"
            if name in args.skip:
                continue
            out = tmp / name
            secs = (run_datatrove(inp, out, workers, tasks=results["files"]) if engine == "datatrove"
                    else run_mgte(inp, out, engine, workers))
            results["runs"][name] = {"seconds": round(secs, 2), "docs_per_s": round(n_docs / secs, 1)}
            print(f"{name:12s} {secs:8.1f} s  {n_docs / secs:8.1f} docs/s", flush=True)
        r = results["runs"]
        ratios = {}
        for w in (1, 2):
            best = max((r[k]["docs_per_s"] for k in r if k.endswith(f"-{w}") and not k.startswith("datatrove")),
                       default=None)
            if best and f"datatrove-{w}" in r:
                ratios[f"mgte_best_vs_datatrove_{w}w"] = round(best / r[f"datatrove-{w}"]["docs_per_s"], 2)
        for eng in ("local", "beam", "ray", "datatrove"):
            if f"{eng}-1" in r and f"{eng}-2" in r:
                ratios[f"{eng}_2w_vs_1w"] = round(r[f"{eng}-2"]["docs_per_s"] / r[f"{eng}-1"]["docs_per_s"], 2)
        if "beam-2" in r and "ray-2" in r:
            ratios["beam_vs_ray_2w"] = round(r["beam-2"]["docs_per_s"] / r["ray-2"]["docs_per_s"], 2)
        results["ratios"] = ratios
        results["near_dup"] = near_dup_quality(tmp)
        print(json.dumps({"ratios": ratios, "near_dup": results["near_dup"]}, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
