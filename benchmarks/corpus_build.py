"""Corpus build throughput and near-dup quality (issue 3), in one run.

    python benchmarks/corpus_build.py --copies 4 --out benchmarks/corpus_build.json
    python benchmarks/corpus_build.py --docs 100000 --skip beam-1 beam-2 ray-1 ray-2   # a scale run
    python benchmarks/corpus_build.py --minhash         # MinHash implementations, per core, same documents

``--docs N`` writes exactly N documents (as many shuffled copies as needed) and adds the peak RSS
of the dedup step (the dedup of the local-1 run redone alone in a fresh process, over its
candidates). ``--minhash`` compares our numpy MinHash, rensa (Rust) and datatrove's signature
step on the bundled corpus: signatures per second on one core, and near-duplicate recall /
precision on the planted pairs when each one's signatures go through the stage's LSH and
verification (same bands, rows and threshold).

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
import functools
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


def shuffled_words(text: str, seed: str) -> str:
    """``text`` with its words in a seeded random order: the same language, words and length, no
    shared word 5-grams (a new document, not a near copy)."""
    words = text.split(" ")
    random.Random(seed).shuffle(words)
    return " ".join(words)


def make_input(dst: Path, copies: int, limit: int | None = None) -> int:
    """Write ``copies`` variants of the clean bundled files as plain JSONL (at most ``limit``
    documents); returns the doc count."""
    dst.mkdir(parents=True, exist_ok=True)
    n = 0
    for c in range(copies):
        for name in CLEAN_FILES:
            if limit is not None and n >= limit:
                return n
            out = dst / f"c{c}-{name.replace('.gz', '')}"
            with open(out, "w", encoding="utf-8") as fh:
                for rec in _lines(RAW / name):
                    if limit is not None and n >= limit:
                        break
                    text = shuffled_words(rec["text"], f"{c}-{n}") if c else rec["text"]
                    rec = {"id": f"{rec.get('id', n)}-c{c}", "text": text, "source": rec.get("source", name)}
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


# ---- MinHash implementations, per core ----------------------------------------------------------
def _planted_texts() -> tuple[list[dict], dict]:
    """Every language-identifiable record of the bundled corpus (normalised text) with its truth row."""
    from pipelines.corpus.normalize import normalize_text
    from pipelines.readers import Record, read_records

    truth = {(t["file"], t["line"] if t["line"] is not None else t["row"]): t
             for t in map(json.loads, (ROOT / "data/corpus/truth.jsonl").read_text().splitlines())}
    rows = []
    for path in sorted(RAW.iterdir()):
        for rec in read_records(str(path), text_field="text"):
            t = truth.get((path.name, rec.line))
            if not isinstance(rec, Record) or t is None or t["kind"] not in ("original", "exact_duplicate", "near_duplicate"):
                continue
            text = rec.data.get("text")
            if isinstance(text, str) and normalize_text(text):
                rows.append({"path": path.name, "line": rec.line, "id": f"{path.name}:{rec.line}",
                             "text": normalize_text(text), "kind": t["kind"]})
    return rows, truth


def _signers(num_perm: int, seed: int, ngram: int) -> dict:
    """name -> text -> uint32 signature, each over its own shingling of the same text."""
    import numpy as np

    from foundation.errors import MgteError
    from pipelines.corpus.dedup import MinHasher, RensaHasher

    signers = {"ours-numpy": functools.partial(MinHasher(num_perm, seed).signature_of, n=ngram)}
    try:
        signers["rensa"] = functools.partial(RensaHasher(num_perm, seed).signature_of, n=ngram)
    except MgteError as exc:
        print(f"{exc}: skipped", file=sys.stderr)
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig

    dt = MinhashDedupSignature(output_folder=tempfile.mkdtemp(prefix="dt-sig-"), config=MinhashConfig(
        n_grams=ngram, num_buckets=num_perm // 5, hashes_per_bucket=5, hash_config=HashConfig(precision=32)))
    def datatrove_sig(text):
        shingles = dt.get_shingles(text)
        if not len(shingles):  # fewer words than n_grams: datatrove has no signature; never a duplicate
            import xxhash

            return np.full(num_perm, xxhash.xxh32_intdigest(text), dtype=np.uint32)
        return np.asarray([h for band in dt.get_signature(shingles) for h in band], dtype=np.uint64).astype(np.uint32)

    signers["datatrove"] = datatrove_sig
    return signers


def minhash_comparison() -> dict:
    """Signatures/s on one core and near-dup recall/precision of each implementation."""
    from pipelines.corpus.config import DedupConfig
    from pipelines.corpus.dedup import text_hash
    from pipelines.corpus.dedup_engines import dedup_in_memory

    cfg = DedupConfig()
    rows, _ = _planted_texts()
    planted = {r["id"] for r in rows if r["kind"] == "near_duplicate"}
    dups = {r["id"] for r in rows if r["kind"] != "original"}
    out = {}
    for name, sign in _signers(cfg.bands * cfg.rows, cfg.seed, cfg.ngram).items():
        for r in rows[:50]:
            sign(r["text"])  # warm up (regex tables, numba/JIT-free caches)
        t0 = time.process_time()
        sigs = [sign(r["text"]) for r in rows]
        secs = time.process_time() - t0
        dedup_rows = [{"path": r["path"], "line": r["line"], "id": r["id"], "text_hash": text_hash(r["text"]),
                       "minhash": s.tolist()} for r, s in zip(rows, sigs)]
        decided = {f"{d['path']}:{d['line']}": d["reason"] for d in dedup_in_memory(dedup_rows, cfg)}
        near = [k for k, v in decided.items() if v == "near_duplicate"]
        out[name] = {"docs": len(rows), "cpu_seconds": round(secs, 3), "docs_per_cpu_s": round(len(rows) / secs, 1),
                     "near_recall": round(sum(k in decided for k in planted) / len(planted), 4),
                     "near_precision": round(sum(k in dups for k in near) / max(1, len(near)), 4)}
        print(name, out[name], flush=True)
    return out


DEDUP_IMPLS = {  # the local engine's columnar step, and the row-by-row reference the other engines follow
    "columnar": "c = DedupColumns.read(files, DedupConfig()); n = len(c); d = dedup_columnar(c, DedupConfig())",
    "reference": "rows = [r for f in files for r in read_dedup_rows(f)]; n = len(rows); d = dedup_in_memory(rows, DedupConfig())",
}


def dedup_peak_rss(run_dir: Path, impl: str = "columnar") -> dict:
    """The dedup step of a finished local run, redone alone in a fresh process: its time and peak RSS."""
    code = ("import resource, sys, glob, time; from pipelines.corpus.steps import read_dedup_rows; "
            "from pipelines.corpus.dedup_engines import dedup_in_memory, dedup_columnar, DedupColumns; "
            "from pipelines.corpus.config import DedupConfig; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; t0 = time.perf_counter(); "
            "files = [(f, 0) for f in sorted(glob.glob(sys.argv[1] + '/_work/candidates/*.parquet'))]; "
            f"{DEDUP_IMPLS[impl]}; "
            "print(n, len(d), base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)")
    proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    *ints, secs = proc.stdout.split()[-5:]
    n_rows, n_dec, base_kb, peak_kb = map(int, ints)
    return {"impl": impl, "candidates": n_rows, "decisions": n_dec, "seconds": round(float(secs), 2),
            "rss_after_imports_mb": round(base_kb / 1024, 1), "peak_rss_mb": round(peak_kb / 1024, 1),
            "dedup_rss_mb": round((peak_kb - base_kb) / 1024, 1)}


def dedup_scale(n_docs: int, tmp: Path) -> dict:
    """The dedup step alone at ``n_docs`` documents: candidates (text hash, MinHash of the stage's
    default hasher) of ``n_docs`` shuffled-copy documents, then :func:`dedup_peak_rss` over them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.corpus.config import DedupConfig
    from pipelines.corpus.dedup import make_hasher, text_hash
    from pipelines.corpus.normalize import normalize_text

    cfg = DedupConfig()
    per_copy = sum(1 for name in CLEAN_FILES for _ in _lines(RAW / name))
    inp, run_dir = tmp / f"dedup-input-{n_docs}", tmp / f"dedup-{n_docs}"
    make_input(inp, -(-n_docs // per_copy), n_docs)
    hasher = make_hasher(cfg.minhash, cfg.bands * cfg.rows, cfg.seed)
    (run_dir / "_work" / "candidates").mkdir(parents=True)
    t0 = time.perf_counter()
    for k, path in enumerate(sorted(inp.iterdir())):
        rows = []
        for line, rec in enumerate(_lines(path), 1):
            text = normalize_text(rec["text"])
            rows.append({"path": str(path), "line": line, "id": rec["id"], "text_hash": text_hash(text),
                         "minhash": hasher.signature_of(text, cfg.ngram).tolist()})
        pq.write_table(pa.Table.from_pylist(rows), run_dir / "_work" / "candidates" / f"part-{k:04d}.parquet")
    signing = time.perf_counter() - t0
    return {"docs": n_docs, "minhash": cfg.minhash, "signature_seconds": round(signing, 1),
            "dedup": [dedup_peak_rss(run_dir, impl) for impl in DEDUP_IMPLS]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--docs", type=int, default=None, help="exactly this many documents (overrides --copies)")
    ap.add_argument("--minhash", action="store_true", help="only compare the MinHash implementations")
    ap.add_argument("--dedup-scale", type=int, nargs="*", default=None, metavar="N",
                    help="only the dedup step's time and peak RSS at these document counts, e.g. 10000 100000")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--skip", nargs="*", default=[], help="runs to skip, e.g. ray-2 datatrove-1")
    args = ap.parse_args()
    if args.minhash:
        results = {"minhash": minhash_comparison(), "cpus": os.cpu_count()}
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        return
    tmp = Path(tempfile.mkdtemp(prefix="mgte-bench-"))
    if args.dedup_scale:
        try:
            results = {"dedup_scale": [dedup_scale(n, tmp) for n in args.dedup_scale]}
            print(json.dumps(results, indent=1))
            if args.out:
                Path(args.out).write_text(json.dumps(results, indent=1))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        inp = tmp / "input"
        per_copy = sum(1 for name in CLEAN_FILES for _ in _lines(RAW / name))
        copies = -(-args.docs // per_copy) if args.docs else args.copies
        n_docs = make_input(inp, copies, args.docs)
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
        if "local-1" not in args.skip:
            results["dedup_rss"] = dedup_peak_rss(tmp / "local-1")
            print("dedup step:", results["dedup_rss"], flush=True)
        results["near_dup"] = near_dup_quality(tmp)
        print(json.dumps({"ratios": ratios, "near_dup": results["near_dup"]}, indent=1))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
