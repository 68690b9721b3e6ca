"""Hard-negative mining (issue 13): ``mgte mine`` against sentence-transformers' ``mine_hard_negatives``.

    python benchmarks/mining.py --out benchmarks/mining.json [--pairs 1000] [--search-sizes 100000 1000000]

Each measurement runs in its own subprocess, which reports its wall time and peak resident set
(``ru_maxrss``), so one run's memory does not hide another's.

1. End to end, same model (all-MiniLM-L6-v2, offline copy), same pairs (the first ``--pairs``
   rows of ``data/pairs/train``), same rule: candidates = every positive, 8 negatives from ranks
   10-100 with score < 0.95 x the positive's, ``top``. sentence-transformers: ``range_min=9,
   range_max=100, relative_margin=0.05, num_negatives=8, sampling_strategy='top', use_faiss=True``
   (its ranks count from 0 and include the positive; ``relative_margin`` 0.05 = ratio 0.95).
   ``mgte mine`` twice: the sentence-transformers pooling of the model (``encode.pooling=auto``)
   and our padded token-budget path over the Hugging Face model (``encode.pooling=mean``; same
   vectors for this model). Queries/s = queries / wall time of the whole process (imports, model
   load, encoding, search, writing).
2. Cached re-mine: ``mgte mine`` again into a new output with another window and thresholds; the
   embedding cache is reused (0 shards encoded): wall time vs the first run.
3. Search only, synthetic clustered vectors (384-d, float16 shards on disk, 1,000 queries):
   flat (exact, memory-mapped shards) vs IVF (nlist 1024, nprobe 32) recall@100 and time at
   ``--ivf-size`` vectors; peak anonymous memory (RssAnon, sampled) and peak RSS of an exact
   search at each of ``--search-sizes``: the anonymous part is set by the query chunk and one shard,
   the file-backed part is the memory map of the vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DIM = 384
SHARD = 65536


def child(code: str, *args: str, timeout: int = 3000) -> dict:
    """Run ``code`` (which sets ``result``) in a fresh interpreter; its JSON result + wall s + peak RSS."""
    wrapper = (f"import json, resource, sys, time\nsys.path.insert(0, {str(ROOT)!r})\nt0 = time.perf_counter()\n"
               f"{code}\nresult['wall_s'] = round(time.perf_counter() - t0, 2)\n"
               "result['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)\n"
               "print('@@' + json.dumps(result))\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("@@")][-1][2:])


def pairs_file(n: int, path: Path) -> Path:
    from pipelines.pairs import read_raw_pairs

    tables, _ = read_raw_pairs([str(ROOT / "data" / "pairs" / "train")])
    rows = [r for t in tables.values() for r in t.select(["query", "positive", "source", "lang"]).to_pylist()][:n]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


MGTE = """
from foundation.config import load_config
from pipelines import mine
cfg = load_config(mine.Config, sys.argv[1], sys.argv[2:])
manifest = mine.run(cfg)
result = {"kept": manifest["counts"]["kept"], "queries": manifest["extra"]["queries"],
          "encoded_shards": manifest["extra"]["encoded_shards"]}
"""

ST = """
import datasets
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives
from pipelines.embedding import resolve_model_dir
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
model = SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu")
ds = datasets.Dataset.from_dict({"query": [r["query"] for r in rows], "positive": [r["positive"] for r in rows]})
out = mine_hard_negatives(ds, model, range_min=9, range_max=100, relative_margin=0.05, num_negatives=8,
                          sampling_strategy="top", use_faiss=True, batch_size=64, output_format="n-tuple",
                          verbose=False)
result = {"kept": len(out), "queries": len(set(r["query"] for r in rows))}
"""


ST_OURS = ST.replace('SentenceTransformer(str(resolve_model_dir("all-MiniLM-L6-v2")), device="cpu")',
                     'SentenceTransformer(sys.argv[2], device="cpu", trust_remote_code=True, local_files_only=True)')


def our_encoder_dir(path: Path) -> Path:
    """An mgte encoder of all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, GLU 1536), random
    weights (speed does not depend on them), saved with its sentence-transformers files ([CLS])."""
    import torch

    from model import MGTEConfig, MGTEModel, save_pretrained
    from model.tokenizer import load_tokenizer
    from training.embedder import write_sentence_transformers_files

    torch.manual_seed(0)
    cfg = MGTEConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
    save_pretrained(MGTEModel(cfg), path, tokenizer=load_tokenizer())
    write_sentence_transformers_files(path, max_seq_length=256)
    return path


def ours_vs_st(work: Path, n_pairs: int) -> dict:
    """The same comparison on our encoder: sentence-transformers runs it padded (through its
    Hugging Face remote code), `mgte mine` unpadded on token-budget batches."""
    src = pairs_file(n_pairs, work / "pairs.jsonl")
    model = our_encoder_dir(work / "ours-minilm-shape")
    tiny = str(ROOT / "dags" / "configs" / "mine" / "tiny.yaml")
    res = {"pairs": n_pairs, "model": "mgte encoder, 6 x 384 (random weights)"}
    res["sentence_transformers"] = child(ST_OURS, str(src), str(model))
    res["mgte_unpadded"] = child(MGTE, tiny, f"input=[{src}]", f"model={model}", "encode.doc_max_length=256",
                                 "encode.query_max_length=256", "progress=false", f"output={work / 'ours'}",
                                 f"cache_dir={work / 'cache-ours'}")
    for key in ("sentence_transformers", "mgte_unpadded"):
        res[key]["queries_per_s"] = round(res[key]["queries"] / res[key]["wall_s"], 2)
    res["speedup_vs_st"] = round(res["sentence_transformers"]["wall_s"] / res["mgte_unpadded"]["wall_s"], 2)
    return res


def end_to_end(work: Path, n_pairs: int) -> dict:
    src = pairs_file(n_pairs, work / "pairs.jsonl")
    tiny = str(ROOT / "dags" / "configs" / "mine" / "tiny.yaml")
    common = [f"input=[{src}]", "encode.doc_max_length=256", "encode.query_max_length=256", "progress=false"]
    res = {"pairs": n_pairs}
    res["sentence_transformers"] = child(ST, str(src))
    res["mgte_st_pooling"] = child(MGTE, tiny, *common, f"output={work / 'a'}", f"cache_dir={work / 'cache-a'}")
    res["mgte_hf_token_budget"] = child(MGTE, tiny, *common, "encode.pooling=mean", f"output={work / 'b'}",
                                        f"cache_dir={work / 'cache-b'}")
    res["mgte_cached_remine"] = child(MGTE, tiny, *common, f"output={work / 'c'}", f"cache_dir={work / 'cache-a'}",
                                      "rank_range=[5,50]", "max_score_ratio=0.9", "select=random")
    for key in ("sentence_transformers", "mgte_st_pooling", "mgte_hf_token_budget", "mgte_cached_remine"):
        res[key]["queries_per_s"] = round(res[key]["queries"] / res[key]["wall_s"], 2)
    st = res["sentence_transformers"]["wall_s"]
    res["speedup_vs_st"] = {k: round(st / res[k]["wall_s"], 2) for k in ("mgte_st_pooling", "mgte_hf_token_budget")}
    res["cached_remine_speedup"] = round(res["mgte_st_pooling"]["wall_s"] / res["mgte_cached_remine"]["wall_s"], 2)
    return res


def synthetic_shards(n: int, root: Path, seed: int = 0, dim: int = DIM, shard: int = SHARD,
                     dtype=np.float16) -> list[Path]:
    """Clustered unit vectors (``dtype`` shards of ``shard`` rows), written shard by shard (never all
    in memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    paths = []
    for s, lo in enumerate(range(0, n, shard)):
        m = min(shard, n - lo)
        v = centres[rng.integers(0, len(centres), m)] + 0.7 * rng.normal(size=(m, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        paths.append(root / f"shard-{s:05d}.npy")
        np.save(paths[-1], v.astype(dtype))
    return paths


QUERIES = """
root = Path(sys.argv[1])
shards = [np.load(p, mmap_mode="r") for p in sorted(root.glob("shard-*.npy"))]
n = sum(s.shape[0] for s in shards)
rng = np.random.default_rng(1)  # 1,000 queries near stored vectors (perturbed copies)
q = np.asarray(shards[0][:1000], dtype=np.float32) + 0.3 * rng.normal(size=(1000, shards[0].shape[1])).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
keys = np.arange(n)
"""

SEARCH = """
import threading
import numpy as np
from pathlib import Path
from pipelines.mine.search import exact_search
peak = [0]
def sample():
    while not done:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.02)
done = False
threading.Thread(target=sample, daemon=True).start()
{queries}t = time.perf_counter()
exact_search(q, shards, np.full(1000, 100), keys)
search_s = time.perf_counter() - t
done = True
result = {"vectors": n, "search_s": round(search_s, 2), "peak_anon_mb": round(peak[0] / 1024, 1),
          "vectors_file_mb": round(n * shards[0].shape[1] * 2 / 2**20, 1)}
""".replace("{queries}", QUERIES)

IVF = """
import numpy as np
from pathlib import Path
from pipelines.mine.config import SearchConfig
from pipelines.mine.search import ann_search, build_index, exact_search, index_params
{queries}ks = np.full(1000, 100)
t = time.perf_counter(); exact = exact_search(q, shards, ks, keys); flat_s = time.perf_counter() - t
cfg = SearchConfig(index="ivf", nlist=1024, nprobe=32, slack=0)
t = time.perf_counter(); path = build_index(shards, index_params(cfg, n), root / "ivf.faiss"); build_s = time.perf_counter() - t
t = time.perf_counter(); approx = ann_search(path, cfg, q, ks, keys); ivf_s = time.perf_counter() - t
recall = float(np.mean([len(set(a[0]) & set(b[0])) / 100 for a, b in zip(approx, exact)]))
result = {"vectors": n, "flat_s": round(flat_s, 2), "ivf_build_s": round(build_s, 2), "ivf_search_s": round(ivf_s, 2),
          "ivf_recall@100": round(recall, 4), "flat_qps": round(1000 / flat_s, 1), "ivf_qps": round(1000 / ivf_s, 1)}
""".replace("{queries}", QUERIES)


def search_bench(work: Path, sizes: list[int], ivf_size: int) -> dict:
    res = {"rss": []}
    for n in sizes:
        d = work / f"vec-{n}"
        d.mkdir()
        synthetic_shards(n, d)
        res["rss"].append(child(SEARCH, str(d)))
        if n == ivf_size:
            res["flat_vs_ivf"] = child(IVF, str(d))
        for p in d.glob("*"):
            p.unlink()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--search-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--ivf-size", type=int, default=100_000)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--ours", action="store_true", help="only the end-to-end comparison on our encoder")
    args = ap.parse_args()
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.ours:
            result["ours_vs_st"] = ours_vs_st(work, args.pairs)
            text = json.dumps(result, indent=1)
            print(text)
            if args.out:
                Path(args.out).write_text(text + "\n")
            return
        if not args.skip_e2e:
            result["end_to_end"] = end_to_end(work, args.pairs)
            print(json.dumps(result["end_to_end"], indent=1), flush=True)
        result["search"] = search_bench(work, args.search_sizes, args.ivf_size)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
