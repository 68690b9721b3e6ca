"""Model integrity check cost (issue 23): sha256 of a model directory's files vs loading the model.

    python benchmarks/model_integrity.py [--base]

Models (written by mgte, so each carries ``checksums.json``):
1. ``trm-tiny``: a TRM like the tiny DAG's (``save_trm`` of the tiny 2 x 64 encoder with the real
   XLM-R vocabulary: 64 MB of weights, a 17 MB tokenizer);
2. ``minilm``: all-MiniLM-L6-v2 behind the packed adapter, saved by ``training.model_builder.save_model``
   (90 MB, a MiniLM-sized model);
3. ``base`` (``--base``): a random gte-multilingual-base-sized encoder (``MGTEConfig.base``, 1.2 GB fp32).

For each: ``write_checksums`` (what a save adds, best of ``--repeat``), and in a fresh process per
measurement (imports done before the clock starts, files in the page cache for both):
``verify_checksums`` (what a load adds) and the first ``load_embedder(verify=False)`` of the process
(the load a stage does: weights, tokenizer, model build), medians of ``--repeat`` processes. A warm
repeat of the load in the same process (tokenizer cached) is shown too. CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def build(root: Path, base: bool) -> dict[str, Path]:
    import torch

    import model
    from model.tokenizer import bundled_xlmr_tokenizer_json, load_tokenizer
    from training.model_builder import ModelConfig, build_encoder, save_model
    from training.trm.model import TRMEmbedder, save_trm

    tok = load_tokenizer(bundled_xlmr_tokenizer_json())
    torch.manual_seed(0)
    out = {"trm-tiny": save_trm(TRMEmbedder(model.MGTEModel(model.MGTEConfig.tiny()), "cls", tok.all_special_ids),
                                root / "trm-tiny", tokenizer=tok, max_seq_length=512, dims=(32, 64))}
    minilm = build_encoder(ModelConfig(), "all-MiniLM-L6-v2")
    out["minilm"] = save_model(minilm, root / "minilm")
    if base:
        out["base"] = model.save_pretrained(model.MGTEModel(model.MGTEConfig.base()), root / "base", tokenizer=tok)
    return out


FRESH = """
import json, sys, time
import model.files as files
from pipelines.embedding import load_embedder
import torch, transformers  # imports before the clock
t = time.perf_counter(); files.verify_checksums(sys.argv[1]); verify = time.perf_counter() - t
t = time.perf_counter(); load_embedder(sys.argv[1], device="cpu", verify=False); load = time.perf_counter() - t
t = time.perf_counter(); load_embedder(sys.argv[1], device="cpu", verify=False); warm = time.perf_counter() - t
print(json.dumps({"verify": verify, "load": load, "warm": warm}))
"""


def fresh_process(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", FRESH, str(path)], capture_output=True, text=True, env=env,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", action="store_true", help="also a base-sized (1.2 GB) model")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model.files as files

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build(Path(tmp), args.base).items():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

            write_s = best(lambda: files.write_checksums(path), args.repeat)
            fresh = [fresh_process(path) for _ in range(args.repeat)]
            verify_s, load_s, warm_s = (statistics.median(f[k] for f in fresh) for k in ("verify", "load", "warm"))
            rows.append({"model": name, "mb": round(size / 1e6, 1), "write_checksums_s": round(write_s, 3),
                         "verify_s": round(verify_s, 3), "first_load_s": round(load_s, 3),
                         "warm_load_s": round(warm_s, 3), "verify_over_first_load": round(verify_s / load_s, 3)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
