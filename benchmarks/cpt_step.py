"""Pairs/s and peak memory of one CPT step, cached-gradient vs plain, as the batch grows.

Each (mode, batch size) runs in a fresh process that builds the encoder, runs ``--warmup``
steps and then ``--steps`` timed steps of: cached-gradient InfoNCE (``training.gradcache``,
chunks of ``--chunk`` texts) or one plain full-batch backward, then AdamW. Memory is the
process's peak resident set (``ru_maxrss``) minus its resident set before the first step, so the
model, optimizer and data are not counted; with the cached step it should stay flat as the
batch grows (one chunk's activations), with the plain step it grows with the batch.

    python benchmarks/cpt_step.py                        # tiny encoder, batches 64 .. 4096
    python benchmarks/cpt_step.py --preset base --sizes 64 256 --plain-sizes 64 256
    python benchmarks/cpt_step.py --json out.json        # also write the rows as JSON

Texts are random token ids of fixed lengths (``--query-len``, ``--doc-len``), so the numbers
measure the step, not tokenisation.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_child(script: str, args: argparse.Namespace, fixed: dict, skip: tuple[str, ...]) -> dict:
    """One measurement in a fresh interpreter (so peak memory is its own): ``script`` with the
    ``fixed`` flags and every other flag of ``args`` but ``skip``; its last output line, as JSON."""
    cmd = [sys.executable, script] + [a for k, v in fixed.items() for a in (f"--{k.replace('_', '-')}", str(v))] + [
        a for k, v in vars(args).items() if k not in fixed and k not in skip for a in (f"--{k.replace('_', '-')}", str(v))]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    if out.returncode:
        raise SystemExit(f"{' '.join(f'{k} {v}' for k, v in fixed.items())} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_rows(rows: list[dict], path: str | None) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(rows, fh, indent=2)


def one(args: argparse.Namespace) -> dict:
    import torch

    from model import MGTEConfig, MGTEModel, cls_pool
    from model.unpad import pack_sequences
    from training.contrastive import in_batch_loss
    from training.gradcache import cached_step, full_batch_step

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    config = getattr(MGTEConfig, args.preset)(rope_theta=160_000.0)
    model = MGTEModel(config).train()
    model.set_rope_theta(20_000.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-7)
    g = torch.Generator().manual_seed(1)

    def texts(n, length):
        ids = torch.randint(5, config.vocab_size, (n, length), generator=g)
        ids[:, 0] = 0  # <s>
        return ids.tolist()

    def chunks(seqs, size):
        return [pack_sequences(seqs[i:i + size]) for i in range(0, len(seqs), size)]

    b = args.batch
    size = args.chunk if args.mode == "cached" else b
    queries, docs = chunks(texts(b, args.query_len), size), chunks(texts(b, args.doc_len), size)
    hashes = torch.arange(b)

    def encode(chunk):
        ids, cu, longest = chunk
        return cls_pool(model(ids, cu_seqlens=cu, max_seqlen=longest), cu)

    def loss_fn(q, d):
        return in_batch_loss(q, d, 0.01, query_hash=hashes, doc_hash=hashes)

    def step():
        opt.zero_grad(set_to_none=True)
        if args.mode == "cached":
            loss = cached_step(encode, queries, docs, loss_fn, device="cpu")
        else:
            loss = full_batch_step(encode, queries, docs, loss_fn)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss)

    before = rss_mb()
    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    seconds = (time.perf_counter() - start) / args.steps
    return {"mode": args.mode, "batch": b, "chunk": size, "preset": args.preset, "query_len": args.query_len,
            "doc_len": args.doc_len, "pairs_per_s": round(b / seconds, 1), "step_s": round(seconds, 3),
            "peak_step_mb": round(peak_mb() - before, 1), "rss_before_mb": round(before, 1), "loss": round(loss, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=["tiny", "base"], default="tiny")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--plain-sizes", type=int, nargs="*", default=[64, 256, 1024])
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--query-len", type=int, default=16)
    p.add_argument("--doc-len", type=int, default=48)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--mode", choices=["cached", "plain"], help=argparse.SUPPRESS)  # one child run
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(one(args)))
        return
    rows = []
    runs = [("cached", b) for b in args.sizes] + [("plain", b) for b in args.plain_sizes]
    for mode, b in runs:
        row = run_child(__file__, args, {"mode": mode, "batch": b}, skip=("json", "sizes", "plain_sizes"))
        rows.append(row)
        print(f"{row['mode']:>6} batch {row['batch']:>5} chunk {row['chunk']:>5}: {row['pairs_per_s']:>8.1f} pairs/s, "
              f"{row['step_s']:>7.2f} s/step, peak step memory {row['peak_step_mb']:>8.1f} MiB", flush=True)
    write_rows(rows, args.json)


if __name__ == "__main__":
    main()
