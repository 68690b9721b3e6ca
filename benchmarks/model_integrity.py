"""Model integrity check cost (issue 23): sha256 of a model directory's files vs loading the model.

    python benchmarks/model_integrity.py [--base]

Models (written by mgte, so each carries ``checksums.json``):
1. ``trm-tiny``: a TRM like the tiny DAG's (``save_trm`` of the tiny 2 x 64 encoder with the real
   XLM-R vocabulary: 64 MB of weights, a 17 MB tokenizer);
2. ``minilm``: all-MiniLM-L6-v2 behind the packed adapter, saved by ``training.model_builder.save_model``
   (90 MB, a MiniLM-sized model);
3. ``base`` (``--base``): a random gte-multilingual-base-sized encoder (``MGTEConfig.base``, 1.2 GB fp32).

For each: ``write_checksums`` (what a save adds), ``verify_checksums`` from a cold process cache
(what a load adds, the page cache warm as in a load right after a check), and ``load_embedder``
with ``verify=False`` (the load itself). Best of ``--repeat`` wall times, CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", action="store_true", help="also a base-sized (1.2 GB) model")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import model.files as files
    from pipelines.embedding import load_embedder

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build(Path(tmp), args.base).items():
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())

            def verify():
                files._VERIFIED.clear()
                assert files.verify_checksums(path)

            write_s = best(lambda: files.write_checksums(path), args.repeat)
            verify_s = best(verify, args.repeat)
            load_s = best(lambda: load_embedder(str(path), device="cpu", verify=False), args.repeat)
            rows.append({"model": name, "mb": round(size / 1e6, 1), "write_checksums_s": round(write_s, 3),
                         "verify_s": round(verify_s, 3), "load_s": round(load_s, 3),
                         "verify_over_load": round(verify_s / load_s, 3)})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
