"""Encoder throughput on CPU: our unpadded encoder (each CPU attention backend) vs our
encoder on padded input vs Hugging Face `XLMRobertaModel` (eager, sdpa) of the same size.

One length-skewed batch (lognormal document lengths, capped at --max-len) is run forward,
and a smaller one forward + backward, at base size (12 x 768, 12 heads, 3072) and a small size.
Every variant runs in its own subprocess, so peak RSS (ru_maxrss) is its own. A variant whose
activations would exceed --mem-limit-gb runs the batch as consecutive micro-batches of
documents (padded variants keep the whole batch's padded length, so the work is unchanged);
training activations of a 16k-token batch, or eager attention over a padded batch, do not
fit next to other jobs in 24 GiB.

Reported per variant: real tokens/s; speedup over hf-sdpa; MFU = model FLOPs on real tokens
/ time / measured fp32 matmul peak, with model FLOPs = 2 * matmul params * tokens
+ 4 * sum(len^2) * hidden * layers (attention), x3 for forward + backward. Embedding lookups
are not FLOPs and not counted.

    python benchmarks/encoder_throughput.py --out benchmarks/encoder_throughput.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not

SIZES = {
    "base": dict(hidden=768, layers=12, heads=12, inner=3072),
    "small": dict(hidden=384, layers=6, heads=6, inner=1536),
}
VARIANTS = ("ours-sdpa", "ours-eager", "ours-flex", "ours-padded", "hf-sdpa", "hf-eager")
VOCAB = 250_002
CLS, PAD, EOS = 0, 1, 2


# ----------------------------------------------------------------------------- batch and FLOPs
def batch_lengths(total_tokens: int, max_len: int, seed: int, median: float = 400.0, sigma: float = 1.1) -> list[int]:
    """Lognormal document lengths in [8, max_len] until `total_tokens` is reached (last one trimmed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths: list[int] = []
    while sum(lengths) < total_tokens:
        n = int(min(max_len, max(8, rng.lognormal(math.log(median), sigma))))
        lengths.append(min(n, max(8, total_tokens - sum(lengths))))
    return lengths


def matmul_params(size: dict, glu: bool) -> int:
    h, i, layers = size["hidden"], size["inner"], size["layers"]
    return layers * (4 * h * h + (3 if glu else 2) * h * i)


def model_flops(size: dict, lengths: list[int], glu: bool, backward: bool) -> float:
    forward = 2 * matmul_params(size, glu) * sum(lengths) + 4 * sum(n * n for n in lengths) * size["hidden"] * size["layers"]
    return forward * (3 if backward else 1)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def matmul_gflops(n: int = 4096, repeats: int = 3, clock: str = "wall") -> float:
    """Best-of-`repeats` fp32 GFLOP/s of one n x n x n matmul, per second of `clock`."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = CLOCKS[clock]()
        a @ b
        best = min(best, CLOCKS[clock]() - t0)
    return 2 * n**3 / best / 1e9


PADDED = ("ours-padded", "hf-sdpa", "hf-eager")


def activation_gb(variant: str, size: dict, lengths: list[int], backward: bool, pad_to: int) -> float:
    """Rough peak of the activations of one (micro-)batch, padded rows to `pad_to` tokens."""
    h, i, layers, heads = size["hidden"], size["inner"], size["layers"], size["heads"]
    tokens = len(lengths) * pad_to if variant in PADDED else sum(lengths)
    if variant == "hf-eager":
        scores = len(lengths) * heads * pad_to**2 * 4  # one (batch, heads, L, L) fp32 tensor
    elif variant == "ours-eager":
        scores = heads * max(lengths) ** 2 * 4 if not backward else sum(heads * n * n * 4 for n in lengths)
    else:
        scores = 0
    if backward:  # saved activations per token and layer ~ (10 h + 6 i) floats, plus saved probabilities
        return (tokens * (10 * h + 6 * i) * 4 * layers + 2 * scores * layers) / 2**30
    return (tokens * (4 * h + 2 * i) * 4 + 3 * scores) / 2**30


def plan_chunks(variant: str, size: dict, lengths: list[int], backward: bool, limit_gb: float) -> list[list[int]] | None:
    """Consecutive groups of documents whose activations fit in `limit_gb` (padded rows keep the
    whole batch's length, so the work equals the unchunked batch). None if one document does not fit."""
    chunks: list[list[int]] = [[]]
    for row in range(len(lengths)):
        candidate = chunks[-1] + [row]
        if activation_gb(variant, size, [lengths[r] for r in candidate], backward, max(lengths)) <= limit_gb:
            chunks[-1] = candidate
        elif not chunks[-1]:
            return None
        else:
            chunks.append([row])
    return chunks


# ----------------------------------------------------------------------------- one variant (subprocess)
def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _padded_batch(lengths: list[int], seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    batch, longest = len(lengths), max(lengths)
    ids = torch.randint(4, VOCAB, (batch, longest), generator=g)
    mask = torch.zeros(batch, longest, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, 0], ids[row, n - 1] = CLS, EOS
    ids[mask == 0] = PAD
    return ids, mask


def _build(variant: str, size: dict, max_len: int):
    """-> (model, call(ids, mask) -> hidden states whose pad rows are masked out by the caller)."""
    import torch

    if variant.startswith("ours"):
        from model import MGTEConfig, MGTEModel

        backend = "sdpa" if variant == "ours-padded" else variant.split("-", 1)[1]
        config = MGTEConfig(
            hidden_size=size["hidden"], num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
            intermediate_size=size["inner"], attn_backend=backend,
        )
        model = MGTEModel(config)
        if variant != "ours-padded":
            return model, lambda ids, mask: model(ids, mask).last_hidden_state
        # Same kernels, but every document padded to the batch's longest and computed whole.
        def padded_call(ids, mask):
            batch, longest = ids.shape
            cu = torch.arange(batch + 1, dtype=torch.int32) * longest
            return model(ids.flatten(), cu_seqlens=cu, max_seqlen=longest).view(batch, longest, -1)

        return model, padded_call
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"], intermediate_size=size["inner"], type_vocab_size=1,
        max_position_embeddings=max_len + 2, attention_probs_dropout_prob=0.0,  # mGTE has none either
    )
    config._attn_implementation = variant.split("-", 1)[1]
    model = XLMRobertaModel(config, add_pooling_layer=False)
    return model, lambda ids, mask: model(input_ids=ids, attention_mask=mask).last_hidden_state


def run_variant(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    lengths, backward = spec["lengths"], spec["mode"] == "fwdbwd"
    model, call = _build(spec["variant"], spec["size"], spec["max_len"])
    ids, mask = _padded_batch(lengths, seed=1)  # (batch, longest): padded rows, unpadded by "ours"
    warm_ids, warm_mask = _padded_batch([min(n, 64) for n in lengths[:4]], seed=2)
    gflops = matmul_gflops(2048, clock=spec["clock"])  # this process's share of the machine right now
    rss_before = _rss_gb()
    model.train(backward)
    times, cpu_times = [], []
    for step in range(spec["repeats"] + 1):  # step 0: warm-up on a small batch
        chunks = [(warm_ids, warm_mask)] if step == 0 else [(ids[rows], mask[rows]) for rows in spec["chunks"]]
        t0, c0 = time.perf_counter(), time.process_time()
        for x, m in chunks:  # micro-batches; gradients accumulate as in training
            if backward:
                (call(x, m) * m[..., None]).sum().backward()
            else:
                with torch.inference_mode():
                    call(x, m)
        if backward:
            model.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(
        seconds=min(times if spec["clock"] == "wall" else cpu_times), wall_seconds=times, cpu_seconds=cpu_times,
        peak_rss_gb=round(peak, 2), matmul_gflops=round(gflops, 1),
        peak_above_start_gb=round(peak - rss_before, 2), backend=getattr(model, "attn_backend_used", None),
    )


# ----------------------------------------------------------------------------- driver
def measure(variant: str, size_name: str, mode: str, lengths: list[int], args, peak_gflops: float) -> dict:
    size, backward = SIZES[size_name], mode == "fwdbwd"
    row = dict(size=size_name, mode=mode, variant=variant, docs=len(lengths), tokens=sum(lengths), max_len=max(lengths))
    row["computed_tokens"] = len(lengths) * max(lengths) if variant in PADDED else sum(lengths)
    if variant == "ours-flex" and backward:
        return {**row, "skipped": "flex_attention has no CPU backward"}
    chunks = plan_chunks(variant, size, lengths, backward, args.mem_limit_gb)
    if chunks is None:
        return {**row, "skipped": f"one document needs more than --mem-limit-gb {args.mem_limit_gb} GiB"}
    row["micro_batches"] = len(chunks)
    spec = dict(variant=variant, size=size, mode=mode, lengths=lengths, repeats=args.repeats,
                threads=args.threads, max_len=args.max_len, chunks=chunks, clock=args.clock)
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True, text=True, timeout=args.timeout, cwd=Path(__file__).resolve().parents[1],
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {**row, "skipped": f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(lines[-1][len("RESULT "):])
    flops = model_flops(size, lengths, glu=variant.startswith("ours"), backward=backward)
    return {
        **row, **result,
        "tokens_per_s": round(sum(lengths) / result["seconds"], 1),
        "model_tflop": round(flops / 1e12, 3),
        "mfu": round(flops / result["seconds"] / (max(peak_gflops, result["matmul_gflops"]) * 1e9), 4),
    }


def print_table(rows: list[dict]) -> None:
    header = (f"{'size':6} {'mode':7} {'variant':12} {'tokens/s':>9} {'x hf-sdpa':>9} {'s':>8} {'MFU':>6} "
              f"{'mmGF/s':>7} {'peakGB':>7} {'+GB':>6}  note")
    print(header + "\n" + "-" * len(header))
    for r in rows:
        if "skipped" in r:
            print(f"{r['size']:6} {r['mode']:7} {r['variant']:12} {'-':>9} {'-':>9} {'-':>8} {'-':>6} {'-':>7} "
                  f"{'-':>7} {'-':>6}  {r['skipped']}")
            continue
        speedup = f"{r['speedup_vs_hf_sdpa']:.2f}" if r.get("speedup_vs_hf_sdpa") else "-"
        print(f"{r['size']:6} {r['mode']:7} {r['variant']:12} {r['tokens_per_s']:9.0f} {speedup:>9} {r['seconds']:8.2f} "
              f"{100 * r['mfu']:5.1f}% {r['matmul_gflops']:7.0f} {r['peak_rss_gb']:7.2f} {r['peak_above_start_gb']:6.2f}  "
              f"{r['docs']} docs, {r['tokens']} tokens, computed {r['computed_tokens']}"
              + (f", {r['micro_batches']} micro-batches (memory)" if r["micro_batches"] > 1 else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=False, help="write the results as JSON here")
    parser.add_argument("--sizes", default="base,small")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--modes", default="fwd,fwdbwd")
    parser.add_argument("--total-tokens", type=int, default=16_384, help="forward batch size in real tokens")
    parser.add_argument("--train-tokens", type=int, default=4_096, help="forward+backward batch size in real tokens")
    parser.add_argument("--max-len", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="'cpu' (process time, best with --threads 1) is robust to other jobs on the machine")
    parser.add_argument("--mem-limit-gb", type=float, default=10.0)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per variant")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_variant(json.loads(args.worker))), flush=True)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    peak_before = matmul_gflops(clock=args.clock)
    batches = {
        "fwd": batch_lengths(args.total_tokens, args.max_len, args.seed),
        "fwdbwd": batch_lengths(args.train_tokens, args.max_len, args.seed + 1),
    }
    rows = []
    for size_name in args.sizes.split(","):
        for mode in args.modes.split(","):
            group = [measure(v, size_name, mode, batches[mode], args, peak_before) for v in args.variants.split(",")]
            reference = next((r for r in group if r["variant"] == "hf-sdpa" and "skipped" not in r), None)
            for r in group:
                if reference and "skipped" not in r:
                    r["speedup_vs_hf_sdpa"] = round(r["tokens_per_s"] / reference["tokens_per_s"], 2)
                print(json.dumps(r), file=sys.stderr, flush=True)
            rows.extend(group)
    peak_after = matmul_gflops(clock=args.clock)
    print(f"\nclock: {args.clock}; fp32 matmul peak ({args.threads} threads): {peak_before:.0f} GFLOP/s before, "
          f"{peak_after:.0f} after "
          f"(4096^3); MFU divides by the larger of 'before' and the variant's own 2048^3 measurement. torch {torch.__version__}")
    for mode, lengths in batches.items():
        print(f"{mode} batch: {len(lengths)} docs, {sum(lengths)} tokens, max {max(lengths)}, "
              f"padded to {len(lengths) * max(lengths)}")
    print_table(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(dict(
            matmul_gflops_before=peak_before, matmul_gflops_after=peak_after, threads=args.threads,
            torch=torch.__version__, batches=batches, args={k: str(v) for k, v in vars(args).items()}, rows=rows,
        ), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
