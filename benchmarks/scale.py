"""Each data stage at growing sizes (issue 27): time per record and peak memory of the driver and of
each worker, one (stage, engine, size) cell per invocation, appended to a JSON results file.

    python benchmarks/scale.py --stage corpus --engine beam --size 10000      # one cell
    python benchmarks/scale.py --stage mine --engine ivf --size 1000000 --dim 768
    python benchmarks/scale.py --report                                      # table + log-log plot

Cells (``--engine`` per ``--stage``):

- ``corpus`` (local | beam | ray): ``mgte corpus`` (``dags/configs/corpus/tiny.yaml``, 2 workers) on
  synthetic records built from the bundled real text (:func:`synthetic_corpus`: every language and
  length of the bundled originals, each copy's words reshuffled so it is a new document, and
  planted exact and near duplicates at ``--dup-rate``). The result records how many of the planted
  duplicates the stage dropped as duplicates.
- ``dedup`` (local | beam | ray): the corpus stage's dedup task alone (``run_dedup``, what its dedup
  phase calls, on the engine of ``dags/configs/corpus/tiny.yaml`` with 2 workers) over candidate
  files written as the stage's read tasks write them (signatures from the stage's hasher) for
  :func:`synthetic_corpus` records; records how many planted duplicates it found and, up to 100k
  records, whether its decisions equal the local engine's. The inputs are kept in ``--scratch``
  for the next engine (their preparation is not part of the cell's time or memory).
- ``pairs`` (local | beam | ray): ``mgte pairs`` (``dags/configs/pairs/tiny.yaml``) on synthetic pairs from
  ``data/pairs/train``, exact duplicate pairs planted at ``--dup-rate``.
- ``mine`` (flat | ivf): the mining search over ``--size`` candidates, ``--queries`` queries, top 100:
  flat = ``pipelines.mine.search.exact_search`` over float16 shards memory-mapped from disk,
  ivf = ``build_index`` (IVF-Flat, nlist 1024) + ``ann_search`` (nprobe 32). The vectors are
  SYNTHETIC clustered unit vectors of ``--dim`` dimensions (the mGTE base model's 768 by default),
  not encoder outputs: embedding 1M texts on 2 CPU cores is out of reach here; the encoder's own
  throughput is measured separately (``benchmarks/encoder_throughput.py``).
- ``tokenize`` (xlmr): the XLM-R fast tokenizer that ``mgte mlm-shards`` calls, alone, one thread,
  over the synthetic corpus (tokens per CPU-second for the MLM data plan).
- ``eval`` (flat | ivf): ``pipelines.eval.retrieval.dense_search`` (the eval stage's dense retrieval;
  ``dense.index`` = ``Flat`` or ``IVF1024,Flat``) over ``--size`` synthetic float32 document vectors
  memory-mapped from disk, then ``pipelines.eval.metrics.evaluate_arrays`` (nDCG@10, recall@100) on
  synthetic judgements.

Each cell runs as a child process; a sampler reads the resident set (RSS) of the child (the
driver) and of every descendant (local pool workers, Beam DirectRunner workers, Ray's raylet, GCS
and workers) every 0.5 s. Reported: the driver's peak, each worker's peak (the largest, and every
process's), and the peak of the sum over the tree (shared pages counted once per process, so an
upper bound). Before running, :func:`estimate_mb` estimates the cell's peak (from the smaller
sizes already measured for the same cell when there are any, else from the per-record priors in
:data:`PRIORS`); a cell whose estimate exceeds ``--budget-mb`` (default: half of the memory
available now) is recorded as skipped with the estimate as the reason, and not run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from corpus_build import CLEAN_FILES, RAW, shuffled_words  # noqa: E402

RESULTS = ROOT / "benchmarks" / "scale.json"
ENGINES = {"tokenize": ("xlmr",), "corpus": ("local", "beam", "ray"), "dedup": ("local", "beam", "ray"), "pairs": ("local", "beam", "ray"), "mine": ("flat", "ivf"),
           "eval": ("flat", "ivf")}
FILE_RECORDS = 2500  # records per input file (one task of the corpus / pairs engines)
QUERY_K = 100

# Peak-memory priors, MB = base + kb_per_record * records / 1024: from benchmarks/RESULTS.md
# (corpus: local dedup 1.6 KB/record columnar, issue 12; Beam and Ray: their dedup task's slope
# below, the read and write tasks bounded: Beam's tree 2.5 GB at 100k, session 6; the row gather's
# 14 KB/record is gone since issue 27) and the index layouts (mine flat: memory-mapped float16
# pages; ivf / eval: float32 index in memory).
PRIORS = {
    ("corpus", "local"): (1200, 2.0), ("corpus", "beam"): (2000, 1.0), ("corpus", "ray"): (2000, 6.0),
    # the dedup task alone (issue 27): Beam and Ray shuffle slim band items in slices of
    # dedup.shuffle_items; Beam's tree 1.6 GB at 100k (session 5), Ray's tree 2.4 -> 7.6 GB from 100k
    # to 1M (its processes map object-store pages: counted once per process)
    ("dedup", "local"): (400, 2.0), ("dedup", "beam"): (1500, 0.5), ("dedup", "ray"): (2000, 6.0),
    ("pairs", "local"): (1200, 2.0), ("pairs", "beam"): (1500, 4.0), ("pairs", "ray"): (2000, 4.0),
}


def prior_mb(stage: str, engine: str, size: int, dim: int = 768, queries: int = 1000) -> float:
    """The a-priori peak (sum over the process tree) of one cell, MB."""
    if stage == "mine":
        base = 400 + queries * (QUERY_K + 1) * 12 * 3 / 2**20 + 65536 * dim * 4 * 2 / 2**20  # lists, one shard
        per = dim * 2 if engine == "flat" else dim * 4 + dim * 2  # mapped fp16 pages (+ fp32 IVF lists)
        return base + size * per / 2**20
    if stage == "eval":
        return 400 + size * dim * 4 * 2 / 2**20  # mapped fp32 pages + FAISS's own fp32 copy
    if stage == "tokenize":
        return 600 + size * 3 / 1024  # the texts of the cell (~0.8 KB each) and their ids
    base, kb = PRIORS[(stage, engine)]
    return base + kb * size / 1024


def estimate_mb(stage: str, engine: str, size: int, measured: list[dict], dim: int = 768,
                queries: int = 1000) -> tuple[float, str]:
    """(estimated peak MB of the process tree, its basis). Measured cells of the same (stage,
    engine, dim) at smaller sizes win over the prior: two or more -> the line through the two
    largest; one -> that point plus the prior's slope, or the prior where that is larger."""
    rows = [r for r in measured if r.get("status") == "ok" and r["stage"] == stage and r["engine"] == engine
            and (stage not in ("mine", "eval") or r.get("dim") == dim) and r["size"] < size]
    if rows:  # the code of the newest run: its points only (an older code's memory says little of this one's)
        code = _commit(rows[-1].get("code"))
        rows = [r for r in rows if _commit(r.get("code")) == code]
    latest = {r["size"]: r["tree_peak_mb"] for r in rows}  # the last run of each size
    pts = sorted(latest.items())
    if len(pts) >= 2:
        (n1, m1), (n2, m2) = pts[-2:]
        slope = max(0.0, (m2 - m1) / (n2 - n1))
        return m2 + slope * (size - n2), f"line through measured {n1} and {n2} records"
    slope = (prior_mb(stage, engine, 2 * size, dim, queries) - prior_mb(stage, engine, size, dim, queries)) / size
    prior = prior_mb(stage, engine, size, dim, queries)
    if pts:  # one point may not show fixed buffers (a full shard, a query chunk) yet: the larger of the two
        n1, m1 = pts[-1]
        one = m1 + slope * (size - n1)
        if one >= prior:
            return one, f"measured {n1} records + prior slope {slope * 2**20:.0f} B/record"
    return prior, "prior (PRIORS / index layout)"


def _commit(code: str | None) -> str | None:
    """A row's ``code`` without what follows the commit (``+changes``, a note)."""
    return None if code is None else code.split("+")[0].split(" ")[0]


def skip_reason(estimate: float, basis: str, budget_mb: float) -> str | None:
    """Why a cell is not run, or None when its estimate fits the budget."""
    if estimate > budget_mb:
        return f"estimated peak {estimate:.0f} MB ({basis}) > budget {budget_mb:.0f} MB"
    return None


# ---- synthetic records from the bundled real text ----------------------------------------------
def bundled_originals() -> list[dict]:
    """The bundled clean corpus files' records that data/corpus/truth.jsonl marks ``original``."""
    truth = {(t["file"], t["line"]): t["kind"] for t in map(json.loads, (ROOT / "data/corpus/truth.jsonl").open())}
    out = []
    for name in CLEAN_FILES:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(RAW / name, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                if line.strip() and truth.get((name, line_no)) == "original":
                    rec = json.loads(line)
                    out.append({"id": str(rec.get("id", f"{name}:{line_no}")), "text": rec["text"],
                                "source": rec.get("source", name)})
    return out


def new_text(text: str, seed: str) -> str:
    """A new document of ``text``'s language and length: its words reshuffled (no shared word
    5-grams), or its characters when it has under 20 words (scripts written without spaces, whose
    dedup shingles are character n-grams)."""
    if len(text.split(" ")) >= 20:
        return shuffled_words(text, seed)
    chars = list(text)
    random.Random(seed).shuffle(chars)
    return "".join(chars)


def near_copy(text: str, rng: random.Random) -> str:
    """``text`` with one word removed (word 5-gram Jaccard >= 0.75 for the >= 40-word texts it gets)."""
    words = text.split(" ")
    del words[rng.randrange(len(words))]
    return " ".join(words)


def synthetic_corpus(n: int, dup_rate: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``n`` records: ``round(dup_rate * n)`` planted duplicates (exact copies, or near copies with one
    word removed for texts of >= 40 words, half each where possible) of earlier originals, the rest
    originals: the bundled originals, cycled, every copy after the first a :func:`new_text` (no
    shared 5-grams), none equal to another. Returns (records in file order, truth rows of the planted)."""
    base = bundled_originals()
    rng = random.Random(seed)
    n_dup = round(dup_rate * n)
    n_orig = n - n_dup
    originals = []
    seen: set[str] = set()
    i = 0
    while len(originals) < n_orig:  # a copy that equals an earlier text (a 1-character text) is left out
        rec, c = base[i % len(base)], i // len(base)
        text = rec["text"] if c == 0 else new_text(rec["text"], f"{c}-{i}")
        i += 1
        if text not in seen:
            seen.add(text)
            originals.append({"id": f"o{len(originals)}", "text": text, "source": rec["source"]})
    # the duplicates go at random places (never first) and copy an original written before them
    slots = set(rng.sample(range(1, n), n_dup)) if n_dup else set()
    records, truth, oi = [], [], 0
    for pos in range(n):
        if pos in slots:
            src = originals[rng.randrange(oi)]
            near = len(src["text"].split(" ")) >= 40 and rng.random() < 0.5
            text = near_copy(src["text"], rng) if near else src["text"]
            records.append({"id": f"d{len(truth)}", "text": text, "source": src["source"]})
            truth.append({"id": records[-1]["id"], "dup_of": src["id"], "kind": "near" if near else "exact"})
        else:
            records.append(originals[oi])
            oi += 1
    return records, truth


def synthetic_pairs(n: int, dup_rate: float, seed: int = 0) -> tuple[list[dict], int]:
    """``n`` pairs from data/pairs/train: copies after the first have both sides made :func:`new_text`
    (new pairs of the same languages and lengths, none equal to another); ``round(dup_rate * n)`` exact repeats planted."""
    from pipelines.pairs import read_raw_pairs

    tables, _ = read_raw_pairs([str(ROOT / "data" / "pairs" / "train")])
    base = [r for t in tables.values() for r in t.select(["query", "positive", "source", "lang"]).to_pylist()]
    rng = random.Random(seed)
    n_dup = round(dup_rate * n)
    rows, seen, i = [], set(), 0
    while len(rows) < n - n_dup:  # a copy equal to an earlier pair (1-character sides) is left out
        r, c = base[i % len(base)], i // len(base)
        if c:
            r = {**r, "query": new_text(r["query"], f"q{c}-{i}"), "positive": new_text(r["positive"], f"p{c}-{i}")}
        i += 1
        if (r["query"], r["positive"]) not in seen:
            seen.add((r["query"], r["positive"]))
            rows.append(r)
    for _ in range(n_dup):
        rows.insert(rng.randrange(len(rows) + 1), dict(rows[rng.randrange(len(rows))]))
    return rows, n_dup


def write_jsonl(rows: list[dict], dst: Path) -> int:
    """``rows`` as JSONL files of FILE_RECORDS records each; returns the bytes written."""
    dst.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(rows), FILE_RECORDS):
        with open(dst / f"part-{k // FILE_RECORDS:05d}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[k:k + FILE_RECORDS])
    return sum(p.stat().st_size for p in dst.iterdir())


# ---- memory sampling ---------------------------------------------------------------------------
class TreeSampler:
    """Peak RSS of a process and each of its descendants, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.5):
        import psutil

        self.root = psutil.Process(pid)
        self.every = every
        self.peaks: dict[int, tuple[str, int]] = {}
        self.cpu: dict[int, float] = {}  # user + system seconds of each process, at its last sample
        self.private: dict[int, int] = {}  # peak RSS less shared pages (the object store, libraries)
        self.tree_peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                break
            total = 0
            for p in procs:
                try:
                    mem = p.memory_info()
                    rss = mem.rss
                    own = rss - getattr(mem, "shared", 0)  # Ray's workers map the object store: shared pages
                    self.private[p.pid] = max(self.private.get(p.pid, 0), own)
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                    if p.pid not in self.peaks:
                        cmd = p.cmdline()
                        name = p.name() if p.pid != self.root.pid else "driver"
                        if name.startswith("python") and len(cmd) > 2:
                            name = " ".join(os.path.basename(a) for a in cmd[1:3])[:60]
                        elif cmd and "/" in cmd[0]:  # raylet, gcs_server, ... started by path
                            name = os.path.basename(cmd[0].split()[0])[:60]
                        self.peaks[p.pid] = (name, rss)
                    self.peaks[p.pid] = (self.peaks[p.pid][0], max(self.peaks[p.pid][1], rss))
                    total += rss
                except psutil.Error:
                    continue
            self.tree_peak = max(self.tree_peak, total)
            self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        workers = sorted(((name, rss) for pid, (name, rss) in self.peaks.items() if pid != self.root.pid),
                         key=lambda x: -x[1])
        return {"driver_peak_mb": mb(self.peaks.get(self.root.pid, ("", 0))[1]),
                "worker_peak_mb": mb(workers[0][1]) if workers else 0.0, "workers": len(workers),
                "driver_private_mb": mb(self.private.get(self.root.pid, 0)),
                "worker_private_mb": mb(max((v for pid, v in self.private.items() if pid != self.root.pid), default=0)),
                "worker_peaks_mb": [[n, mb(r)] for n, r in workers[:12]],
                "tree_peak_mb": mb(self.tree_peak), "samples": self.samples,
                "cpu_s_sampled": round(sum(self.cpu.values()), 1)}


def run_sampled(cmd: list[str], timeout: int, env: dict | None = None) -> tuple[float, dict, str]:
    """Run ``cmd`` with the tree sampler; (wall seconds, memory and CPU summary, stdout). Fails loudly.
    CPU seconds: ``cpu_s`` = user + system of every descendant reaped by this process or by its
    children (getrusage), ``cpu_s_sampled`` = the sum of each sampled process's last reading (it
    sees processes no one reaps, e.g. Ray's, but misses each one's last 0.5 s)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})})
    with TreeSampler(proc.pid) as sampler:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    secs = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = {**sampler.summary(), "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)}
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return secs, summary, out


# ---- the cells ---------------------------------------------------------------------------------
def engine_sets(engine: str, workers: int) -> list[str]:
    sets = [f"engine={engine}"]
    if engine == "beam":
        sets.append(f"beam.options=--runner=DirectRunner --direct_num_workers={workers} "
                    f"--direct_running_mode={'multi_processing' if workers > 1 else 'in_memory'}")
    elif engine == "ray":
        sets.append(f"ray.num_cpus={workers}")
    else:
        sets.append(f"local.workers={workers}")
    return sets


def cli_cell(stage: str, engine: str, inp: Path, out: Path, workers: int, timeout: int) -> tuple[float, dict, dict]:
    cmd = [sys.executable, "-m", "dags.cli", stage, "--config", f"dags/configs/{stage}/tiny.yaml", "--input", str(inp),
           "--output", str(out)]
    for s in engine_sets(engine, workers):
        cmd += ["--set", s]
    secs, mem, _ = run_sampled(cmd, timeout)
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    return secs, mem, manifest


def dropped_reasons(out: Path) -> dict:
    import pyarrow.parquet as pq

    if not (out / "dropped").exists():
        return {}
    reasons = pq.read_table(out / "dropped", columns=["reason"]).column("reason").to_pylist()
    return {r: reasons.count(r) for r in sorted(set(reasons))}


def corpus_cell(args, work: Path) -> dict:
    rows, truth = synthetic_corpus(args.size, args.dup_rate)
    n_bytes = write_jsonl(rows, work / "input")
    del rows
    secs, mem, manifest = cli_cell("corpus", args.engine, work / "input", work / "out", args.workers, args.timeout)
    reasons = dropped_reasons(work / "out")
    import pyarrow.parquet as pq

    dups = {r["id"]: r["reason"] for r in pq.read_table(work / "out" / "dropped", columns=["id", "reason"]).to_pylist()
            if r["reason"].endswith("_duplicate")}
    planted = {t["id"] for t in truth}
    return {"seconds": secs, **mem, "input_bytes": n_bytes, "counts": manifest.get("counts"), "dropped_reasons": reasons,
            "planted_exact": sum(t["kind"] == "exact" for t in truth),
            "planted_near": sum(t["kind"] == "near" for t in truth),
            "planted_dropped_as_duplicate": len(planted & dups.keys()),
            "duplicates_not_planted": len(dups.keys() - planted)}


def pairs_cell(args, work: Path) -> dict:
    rows, n_dup = synthetic_pairs(args.size, args.dup_rate)
    n_bytes = write_jsonl(rows, work / "input")
    del rows
    secs, mem, manifest = cli_cell("pairs", args.engine, work / "input", work / "out", args.workers, args.timeout)
    return {"seconds": secs, **mem, "input_bytes": n_bytes, "counts": manifest.get("counts"),
            "dropped_reasons": dropped_reasons(work / "out"),
            "planted_exact": n_dup}


def write_vectors(n: int, dim: int, root: Path, dtype, shard: int, seed: int = 0) -> None:
    """Clustered unit vectors, shard by shard (``benchmarks/mining.py``'s builder): ``shard-*.npy``."""
    from mining import synthetic_shards

    root.mkdir(parents=True, exist_ok=True)
    synthetic_shards(n, root, seed, dim=dim, shard=shard, dtype=dtype)


CHILD_HEAD = """
import json, sys, time
from pathlib import Path
import numpy as np
root, nq = Path(sys.argv[1]), int(sys.argv[2])
shards = [np.load(p, mmap_mode="r") for p in sorted(root.glob("shard-*.npy"))]
n = sum(s.shape[0] for s in shards)
rng = np.random.default_rng(1)  # queries near stored vectors (perturbed copies)
q = np.asarray(shards[0][:nq], dtype=np.float32)
q = q + 0.3 * rng.normal(size=q.shape).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
t0 = time.perf_counter()
"""

MINE_FLAT = CHILD_HEAD + """
from pipelines.mine.search import exact_search
exact_search(q, shards, np.full(len(q), 100), np.arange(n))
print("@@" + json.dumps({"work_s": time.perf_counter() - t0}))
"""

MINE_IVF = CHILD_HEAD + """
from pipelines.mine.config import SearchConfig
from pipelines.mine.search import ann_search, build_index, index_params
cfg = SearchConfig(index="ivf", nlist=1024, nprobe=32, slack=0)
path = build_index(shards, index_params(cfg, n), root / "ivf.faiss")
build_s = time.perf_counter() - t0
ann_search(path, cfg, q, np.full(len(q), 100), np.arange(n))
print("@@" + json.dumps({"work_s": time.perf_counter() - t0, "build_s": build_s}))
"""

EVAL = """
import json, sys, time
from pathlib import Path
import numpy as np
from pipelines.eval.metrics import evaluate_arrays
from pipelines.eval.retrieval import dense_search
root, nq, factory = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
docs = np.load(root / "docs.npy", mmap_mode="r")
n = docs.shape[0]
rng = np.random.default_rng(1)
q = np.asarray(docs[:nq], dtype=np.float32) + 0.3 * rng.normal(size=(nq, docs.shape[1])).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
keys = np.arange(n)
t0 = time.perf_counter()
hits = dense_search(docs, q, 100, keys, index_factory=factory)
search_s = time.perf_counter() - t0
qids = np.repeat([f"q{i}" for i in range(nq)], [len(h) for h in hits])
dids = np.concatenate([h.docs for h in hits]).astype(str)
scores = np.concatenate([h.scores for h in hits])
qrels = {f"q{i}": {str(i): 1} for i in range(nq)}  # query i is a perturbed copy of document i
m = evaluate_arrays(qids, dids, scores, qrels, ("ndcg@10", "recall@100"))
print("@@" + json.dumps({"work_s": time.perf_counter() - t0, "search_s": search_s,
                         "recall@100": float(np.mean([v["recall@100"] for v in m.values()]))}))
"""


def child_result(out: str) -> dict:
    return json.loads([l for l in out.splitlines() if l.startswith("@@")][-1][2:])


def mine_cell(args, work: Path) -> dict:
    write_vectors(args.size, args.dim, work / "vec", np.float16, 65536)
    code = MINE_FLAT if args.engine == "flat" else MINE_IVF
    secs, mem, out = run_sampled([sys.executable, "-c", code, str(work / "vec"), str(args.queries)], args.timeout)
    return {"seconds": secs, **mem, **child_result(out), "queries": args.queries, "vectors": "synthetic unit vectors"}


def eval_cell(args, work: Path) -> dict:
    write_vectors(args.size, args.dim, work / "vec", np.float32, 65536)
    docs = np.lib.format.open_memmap(work / "vec" / "docs.npy", mode="w+", dtype=np.float32,
                                     shape=(args.size, args.dim))  # one float32 matrix, filled shard by shard
    lo = 0
    for path in sorted((work / "vec").glob("shard-*.npy")):
        block = np.load(path)
        docs[lo:lo + len(block)] = block
        lo += len(block)
        path.unlink()
    docs.flush()
    del docs
    factory = "Flat" if args.engine == "flat" else "IVF1024,Flat"
    secs, mem, out = run_sampled([sys.executable, "-c", EVAL, str(work / "vec"), str(args.queries), factory],
                                 args.timeout)
    return {"seconds": secs, **mem, **child_result(out), "queries": args.queries, "vectors": "synthetic unit vectors"}


TOKENIZE = """
import json, os, sys, time
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from model.tokenizer import load_tokenizer
texts = [json.loads(l)["text"] for f in sorted(os.listdir(sys.argv[1])) for l in open(os.path.join(sys.argv[1], f))]
encode = load_tokenizer().backend_tokenizer.encode_batch  # what mlm-shards' Tokenize calls
t0 = time.perf_counter()
n = sum(len(e.ids) for k in range(0, len(texts), 256) for e in encode(texts[k:k + 256]))
print("@@" + json.dumps({"work_s": time.perf_counter() - t0, "tokens": n}))
"""


def tokenize_cell(args, work: Path) -> dict:
    """The XLM-R tokenizer of ``mgte mlm-shards`` alone over the synthetic corpus, one thread."""
    rows, _ = synthetic_corpus(args.size, 0.0)
    n_bytes = write_jsonl(rows, work / "input")
    del rows
    secs, mem, out = run_sampled([sys.executable, "-c", TOKENIZE, str(work / "input")], args.timeout,
                                 env={"RAYON_NUM_THREADS": "1"})
    return {"seconds": secs, **mem, **child_result(out), "input_bytes": n_bytes}


DEDUP = """
import json, sys, time
from pathlib import Path
from foundation.config import load_config
from foundation.ledger import StageOutput
from pipelines.corpus import Config
from pipelines.corpus.dedup_engines import run_dedup
from pipelines.engines import make_engine
files, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
cfg = load_config(Config, "dags/configs/corpus/tiny.yaml", [f"output={out}", *sys.argv[3:]])
stage_out = StageOutput(out, "corpus", cfg)
stage_out.begin()
t0 = time.perf_counter()
with make_engine(cfg) as engine:
    run_dedup(engine, [(f, 0) for f in files], cfg.dedup, stage_out, "synthetic")
marker = stage_out.task_marker("dedup", "synthetic")
print("@@" + json.dumps({"work_s": time.perf_counter() - t0, "decisions": marker["decisions"],
                         "near_links": marker.get("near_links"), "near_rounds": marker.get("near_rounds"),
                         "shards": marker["shards"]}))
"""


RAY_STORE = ["ray.object_store_mb=2048"]  # the dedup cell's Ray object store: bounded, spilling to --scratch


def dedup_inputs(size: int, dup_rate: float, root: Path) -> tuple[list[str], list[dict]]:
    """The dedup task's input as the corpus stage's read tasks write it: candidate files of
    FILE_RECORDS rows with the dedup columns (path, line, id, text_hash, and the MinHash signature
    from the stage's own hasher, ``pipelines.corpus.steps._hasher``), over :func:`synthetic_corpus`
    records with planted exact and near duplicates; kept under ``root`` for the next engine's cell."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from foundation.config import load_config
    from pipelines.corpus import Config
    from pipelines.corpus.dedup import text_hash
    from pipelines.corpus.steps import _hasher

    done = root / "truth.json"
    if not done.is_file():
        cfg = load_config(Config, str(ROOT / "dags/configs/corpus/tiny.yaml"))
        hasher = _hasher(cfg.dedup)
        rows, truth = synthetic_corpus(size, dup_rate)
        schema = pa.schema([("path", pa.string()), ("line", pa.int64()), ("id", pa.string()),
                            ("text_hash", pa.string()), ("minhash", pa.list_(pa.uint32()))])
        (root / "candidates").mkdir(parents=True, exist_ok=True)
        for k in range(0, len(rows), FILE_RECORDS):
            part = rows[k:k + FILE_RECORDS]
            src = f"/synthetic/input/part-{k // FILE_RECORDS:05d}.jsonl"
            pq.write_table(pa.table({
                "path": [src] * len(part), "line": list(range(1, len(part) + 1)), "id": [r["id"] for r in part],
                "text_hash": [text_hash(r["text"]) for r in part],
                "minhash": [hasher.signature_of(r["text"], cfg.dedup.ngram) for r in part]}, schema=schema),
                root / "candidates" / f"part-{k // FILE_RECORDS:05d}.parquet")
        done.write_text(json.dumps(truth))
    files = sorted(str(p) for p in (root / "candidates").glob("part-*.parquet"))
    return files, json.loads(done.read_text())


def dedup_cell(args, work: Path) -> dict:
    """The corpus stage's dedup task alone (``pipelines.corpus.dedup_engines.run_dedup``, what the
    stage's dedup phase calls, on the stage's engine built from ``dags/configs/corpus/tiny.yaml``)
    over :func:`dedup_inputs`; checks the decisions against the planted duplicates and, up to
    100k records, against the local engine's columnar dedup of the same candidates."""
    import pyarrow.parquet as pq

    root = Path(args.scratch or tempfile.gettempdir()) / f"scale-dedup-input-{args.size}-{args.dup_rate}"
    t0 = time.perf_counter()
    files, truth = dedup_inputs(args.size, args.dup_rate, root)
    prep_s = time.perf_counter() - t0
    (work / "files.json").write_text(json.dumps(files))
    sets = engine_sets(args.engine, args.workers) + (RAY_STORE if args.engine == "ray" else []) + list(args.set)
    ray_tmp = root.parent / f"r{os.getpid()}"  # short: Ray's socket paths under it must stay under 108 bytes
    try:
        secs, mem, out = run_sampled([sys.executable, "-c", DEDUP, str(work / "files.json"), str(work / "out"), *sets],
                                     args.timeout, env={"RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    got = pq.read_table(sorted((work / "out" / "_work" / "dedup").glob("*.parquet")),
                        columns=["path", "line", "reason", "duplicate_of"])
    ids = {}  # (path, line) -> id
    for f in files:
        t = pq.read_table(f, columns=["path", "line", "id"])
        ids.update(zip(zip(t.column("path").to_pylist(), t.column("line").to_pylist()), t.column("id").to_pylist()))
    decided = {ids[(p, ln)]: r for p, ln, r in zip(got.column("path").to_pylist(), got.column("line").to_pylist(),
                                                     got.column("reason").to_pylist())}
    planted = {t["id"]: t["kind"] for t in truth}
    row = {"seconds": secs, **mem, **child_result(out), "prepare_s": round(prep_s, 1), "sets": sets,
           "planted_exact": sum(k == "exact" for k in planted.values()),
           "planted_near": sum(k == "near" for k in planted.values()),
           "planted_found": {k: sum(planted[i] == k and decided.get(i) == f"{k}_duplicate" for i in planted)
                             for k in ("exact", "near")},
           "duplicates_not_planted": len(decided.keys() - planted.keys())}
    if args.size <= 100_000:  # the reference: the local engine's dedup of the same candidates
        from foundation.config import load_config
        from pipelines.corpus import Config
        from pipelines.corpus.dedup_engines import DedupColumns, dedup_columnar

        cfg = load_config(Config, str(ROOT / "dags/configs/corpus/tiny.yaml"))
        ref = dedup_columnar(DedupColumns.read([(f, 0) for f in files], cfg.dedup), cfg.dedup)
        key = lambda p, ln, r, d: (p, ln, r, d)  # noqa: E731
        mine = sorted(map(key, *(got.column(c).to_pylist() for c in ("path", "line", "reason", "duplicate_of"))))
        row["equals_local_engine"] = mine == sorted(key(d["path"], d["line"], d["reason"], d["duplicate_of"])
                                                    for d in ref)
    return row


CELLS = {"tokenize": tokenize_cell, "corpus": corpus_cell, "dedup": dedup_cell, "pairs": pairs_cell, "mine": mine_cell, "eval": eval_cell}


def load_results(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def code_version() -> str:
    """The commit of the code the cell runs (``+changes`` when the work tree differs from it)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_cell(args) -> dict:
    import psutil

    measured = load_results(args.results)
    est, basis = estimate_mb(args.stage, args.engine, args.size, measured, args.dim, args.queries)
    budget = args.budget_mb or psutil.virtual_memory().available / 2**20 / 2
    row = {"stage": args.stage, "engine": args.engine, "size": args.size, "workers": args.workers,
           "dim": args.dim if args.stage in ("mine", "eval") else None, "estimate_mb": round(est),
           "estimate_basis": basis, "budget_mb": round(budget), "load_avg_start": [round(x, 2) for x in os.getloadavg()],
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]), "code": code_version()}
    reason = skip_reason(est, basis, budget)
    if reason:
        row.update(status="skipped", reason=reason)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"scale-{args.stage}-", dir=args.scratch))
        try:
            row.update(CELLS[args.stage](args, work))
            row["status"] = "ok"
            row["us_per_record"] = round(row["seconds"] / args.size * 1e6, 2)
            row["records_per_s"] = round(args.size / row["seconds"], 1)
            cpu = max(row.get("cpu_s", 0), row.get("cpu_s_sampled", 0))
            row["records_per_cpu_s"] = round(args.size / cpu, 1) if cpu else None
        except Exception as exc:  # recorded, not hidden: the table shows what failed and why
            row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[-600:]}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    if not args.dry_run:
        results = load_results(args.results)
        results.append(row)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(row, indent=1))
    return row


# ---- report ------------------------------------------------------------------------------------
def _private(r: dict) -> str:
    """The largest worker's RSS less its shared pages, where the row measured it (Ray's workers map
    the object store, whose pages count in their RSS)."""
    return f"; {r['worker_private_mb']:.0f} private" if r.get("worker_private_mb") else ""


def report(results: list[dict], plot: Path | None) -> str:
    latest: dict = {}
    for r in results:  # the last run of each cell wins
        latest[(r["stage"], r["engine"] + (f"-{r['dim']}d" if r.get("dim") else ""), r["size"])] = r
    lines = ["| stage | engine | records | status | s | µs/record | records/s | records/CPU-s | driver peak MB | "
             "largest worker MB (workers) | tree peak MB | estimate MB | load avg (start) | code |", "|" + "---|" * 14]
    for (stage, engine, size), r in sorted(latest.items()):
        if r["status"] == "ok":
            lines.append(f"| {stage} | {engine} | {size:,} | ok | {r['seconds']:.1f} | {r['us_per_record']:.1f} | "
                         f"{r['records_per_s']:,.0f} | {r.get('records_per_cpu_s') or '-'} | {r['driver_peak_mb']:.0f} | "
                         f"{r['worker_peak_mb']:.0f} "
                         f"({r['workers']}{_private(r)}) | {r['tree_peak_mb']:.0f} | {r['estimate_mb']} | {r['load_avg_start'][0]} | "
                         f"{r.get('code', '-')} |")
        else:
            lines.append(f"| {stage} | {engine} | {size:,} | {r['status']}: {r['reason'][:160]} | | | | | | | | "
                         f"{r['estimate_mb']} | {r['load_avg_start'][0]} | {r.get('code', '-')} |")
    table = "\n".join(lines)
    if plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            table += "\n\n(matplotlib is not installed: no plot)"
            return table
        fig, (ax_t, ax_c, ax_m) = plt.subplots(1, 3, figsize=(16, 4.8))
        cells = sorted({(s, e) for (s, e, _), r in latest.items() if r["status"] == "ok"})
        colours = plt.get_cmap("tab20").colors
        for k, (s, e) in enumerate(cells):
            pts = sorted((n, r) for (s2, e2, n), r in latest.items() if (s2, e2) == (s, e) and r["status"] == "ok")
            style = dict(color=colours[k % len(colours)], marker="os^D"[k % 4], label=f"{s}/{e}")
            ax_t.plot([n for n, _ in pts], [r["seconds"] for _, r in pts], "-", **style)
            cpu = [(n, max(r.get("cpu_s") or 0, r.get("cpu_s_sampled") or 0)) for n, r in pts]
            cpu = [(n, c) for n, c in cpu if c > 0]
            if cpu:
                ax_c.plot([n for n, _ in cpu], [c for _, c in cpu], "-", **style)
            ax_m.plot([n for n, _ in pts], [r["tree_peak_mb"] for _, r in pts], "-", **style)
        for ax, title in ((ax_t, "wall seconds (load 5-110 on 2 cores)"), (ax_c, "CPU seconds of the process tree"),
                          (ax_m, "peak RSS of the process tree, MB")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("records")
            ax.set_title(title, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
        ax_m.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
    return table


# ---- capacity plan (docs/scale.md) -------------------------------------------------------------
WEEK_S = 7 * 86400
PAPER = {  # shared/PAPER_FACTS.md
    "corpus_tokens": 1.028e12, "corpus_bytes": 4.47 * 2**40, "pairs": 2.9388e9, "ft_queries": 1.4e6 + 2.0e6 + 118.9e3,
}
# Assumptions the plan needs that nothing here measured (each one named in the plan's rows).
ASSUME = {
    "corpus_keep": 0.5,        # kept bytes / input bytes of the raw sources (ours keeps 39 % of its synthetic mix)
    "pair_input_factor": 1.1,  # input pairs / kept pairs (the paper removed duplicates and low-quality pairs)
    "ft_candidates": 10e6,     # candidate passages searched per fine-tuning query (MS MARCO: 8.8M, DPR Wikipedia: 21M)
    "candidate_passages": 30e6,  # passages embedded once for all sets (MS MARCO 8.8M + DPR Wikipedia 21M), 200 tokens
    "ft_text_tokens": 20 + 9 * 200,  # tokens per fine-tuning query group: 20-token query, 1 + 8 documents of 200
    "gpu_fwd_tokens_s": 3806 * 4456 / 52,  # paper Table 6: MLDR-hi on one A100, fp16, unpadded + xFormers: 52 s
    "train_over_fwd": 4.0,     # forward + backward (3x) + the gradient-checkpointing re-forward (1x)
    "cpu_fwd_tokens_s_core": 474 / 2,  # benchmarks/RESULTS.md issue 4: base encoder forward, 2 threads, idle
}


def command_of(row: dict) -> str:
    return re.sub(r" --(scratch|results) \S+", "", row["command"])


def best_rate(results: list[dict], stage: str, engine: str, per: str) -> tuple[float, dict] | None:
    """The largest measured size's (rate per CPU-second, row) of a cell; ``per``: what to divide."""
    rows = [r for r in results if r["stage"] == stage and r["engine"] == engine and r["status"] == "ok"
            and max(r.get("cpu_s") or 0, r.get("cpu_s_sampled") or 0) > 0 and (per != "bytes" or r.get("input_bytes"))]
    if not rows:
        return None
    r = max(rows, key=lambda r: (r["size"], r["date"]))
    cpu = max(r.get("cpu_s") or 0, r.get("cpu_s_sampled") or 0)
    amount = {"records": r["size"], "bytes": r.get("input_bytes"),
              "pairs": r["size"] * r.get("queries", 0)}[per]
    return amount / cpu, r


def plan(results: list[dict]) -> str:
    """The capacity plan's table: per stage, the work at paper scale, the rate per core or GPU (measured
    here with its command, or an estimate with its basis), and the cores or GPUs to finish in a week."""
    rows = []

    def add(stage, work, unit, rate, basis, kind):
        need = work / rate / WEEK_S
        rows.append(f"| {stage} | {work:.3g} {unit} | {rate:,.0f} {unit}/s per {kind} | {basis} | "
                    f"{need:,.1f} {kind}s ({need * 7 * 24:,.0f} {kind}-hours) |")

    corpus = best_rate(results, "corpus", "local", "bytes")
    corpus_in = PAPER["corpus_bytes"] / ASSUME["corpus_keep"]
    if corpus:
        r = corpus[1]
        add("MLM data: `mgte corpus` (LID, filters, MinHash, dedup)", corpus_in, "B", corpus[0],
            f"measured: `{command_of(r)}` ({r['size']:,} records, {r['input_bytes'] / r['size']:.0f} B each, "
            f"load {r['load_avg_start'][0]}); input = 4.47 TiB / keep {ASSUME['corpus_keep']} (assumed)", "core")
    tok = best_rate(results, "tokenize", "xlmr", "records")
    if tok:
        r = tok[1]
        rate = r["tokens"] / max(r.get("cpu_s") or 0, r.get("cpu_s_sampled") or 0)
        add("MLM data: `mgte mlm-shards` (XLM-R tokenizer only)", PAPER["corpus_tokens"], "tokens", rate,
            f"measured: `{command_of(r)}`", "core")
    pairs = best_rate(results, "pairs", "local", "records")
    if pairs:
        r = pairs[1]
        add("CPT pairs: `mgte pairs`", PAPER["pairs"] * ASSUME["pair_input_factor"], "pairs", pairs[0],
            f"measured: `{command_of(r)}` (load {r['load_avg_start'][0]}); input = 2.94B x "
            f"{ASSUME['pair_input_factor']} (assumed)", "core")
    enc_tokens = PAPER["ft_queries"] * 20 + ASSUME["candidate_passages"] * 200  # queries + candidate passages
    add("mining: encode queries + candidates (CPU, fp32)", enc_tokens, "tokens", ASSUME["cpu_fwd_tokens_s_core"],
        "estimate: RESULTS.md issue 4 (474 tokens/s on 2 threads, idle); "
        f"{ASSUME['candidate_passages']:.0e} candidate passages x 200 tokens (assumed)", "core")
    add("mining: encode queries + candidates (GPU)", enc_tokens, "tokens", ASSUME["gpu_fwd_tokens_s"],
        "estimate: the paper's Table 6 (A100, fp16, xFormers), not measured here", "GPU")
    flat = best_rate(results, "mine", "flat", "pairs")
    if flat:
        r = flat[1]
        add("mining: exact search (flat), query x candidate", PAPER["ft_queries"] * ASSUME["ft_candidates"],
            "products", flat[0], f"measured: `{command_of(r)}` ({r['size']:,} synthetic {r['dim']}-d vectors, "
            f"{r['queries']} queries, load {r['load_avg_start'][0]})", "core")
    ivf = best_rate(results, "mine", "ivf", "records")
    if ivf and ivf[1].get("build_s"):
        r = ivf[1]
        build_share = r["build_s"] / r["work_s"]  # the build's share of the cell's work, the rest is 1,000 queries
        add("mining: IVF index build (nlist 1024), per candidate", ASSUME["candidate_passages"], "candidates",
            ivf[0] / build_share, f"measured: `{command_of(r)}` (the build's {build_share:.0%} of the cell's CPU; "
            f"searching then costs ~nprobe/nlist = 32/1024 of flat per query)", "core")
    ft_tokens = PAPER["ft_queries"] * ASSUME["ft_text_tokens"] * 10
    add("fine-tuning: TRM, 10 epochs", ft_tokens, "tokens", ASSUME["gpu_fwd_tokens_s"] / ASSUME["train_over_fwd"],
        f"estimate: Table 6's forward rate / {ASSUME['train_over_fwd']} (backward + checkpointing); "
        f"{ASSUME['ft_text_tokens']} tokens per query group (assumed)", "GPU")
    add("fine-tuning: reranker, 10 epochs", PAPER["ft_queries"] * 11 * 220 * 10, "tokens",
        ASSUME["gpu_fwd_tokens_s"] / ASSUME["train_over_fwd"],
        "estimate: as the TRM; 11 query-document inputs of 220 tokens per query (assumed)", "GPU")
    head = ["| stage | work at paper scale | rate | basis | to finish in a week |", "|---|---|---|---|---|"]
    return "\n".join(head + rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=sorted(CELLS))
    ap.add_argument("--engine")
    ap.add_argument("--size", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dup-rate", type=float, default=0.05, help="planted duplicates per record")
    ap.add_argument("--dim", type=int, default=768, help="synthetic vector dimension (mine, eval)")
    ap.add_argument("--queries", type=int, default=1000, help="queries of the mine / eval cells")
    ap.add_argument("--budget-mb", type=float, default=None, help="skip a cell estimated above this (default: "
                    "half of the memory available now)")
    ap.add_argument("--timeout", type=int, default=3000)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a corpus config override of the dedup cell (e.g. dedup.shuffle_items=250000); recorded in the row")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--scratch", default=None, help="where inputs and outputs are written (default: $TMPDIR)")
    ap.add_argument("--dry-run", action="store_true", help="print the row, do not append it")
    ap.add_argument("--report", action="store_true", help="print the markdown table of --results and plot it")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "scale.png")
    ap.add_argument("--plan", action="store_true", help="print the capacity plan's table from --results")
    args = ap.parse_args()
    if args.plan:
        print(plan(load_results(args.results)))
        return
    if args.report:
        print(report(load_results(args.results), args.plot))
        return
    if not (args.stage and args.engine and args.size):
        ap.error("--stage, --engine and --size are needed (or --report)")
    if args.engine not in ENGINES[args.stage]:
        ap.error(f"--engine for {args.stage}: one of {ENGINES[args.stage]}")
    run_cell(args)


if __name__ == "__main__":
    main()
