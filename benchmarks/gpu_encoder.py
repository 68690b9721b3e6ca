"""The encoder on a GPU (issue 11, the Table 6 protocol): our unpadded encoder with every
attention backend that runs here against Hugging Face `XLMRobertaModel` on padded batches
(SDPA) of the same size, in the same run.

Two protocols, each forward and forward + backward, over all of its batches:

* ``long``: lengths like MLDR (lognormal, mean ~4.5k tokens, at most ``--max-len``), 16
  documents a batch, in arrival order and length-sorted;
* ``short``: at most 512 tokens (median ~256), 128 documents a batch.

Reported per (protocol, order, mode, variant): real tokens/s, the ratio to HF padded SDPA,
TFLOP/s on real tokens (2 x matmul params x tokens + 4 x sum(len^2) x hidden x layers, x3 with
backward) and its share of the matmul peak measured in the same process, peak memory (CUDA
max allocated; on CPU the resident set sampled every 5 ms during the row, so rows do not inherit
each other's peaks). Every row first estimates its peak from its shapes (``estimated_peak_gb``:
parameters, activations kept for backward, the attention scores of the variants that hold them,
an MLM head's logits) and is skipped, with the estimate as its reason, when that exceeds 80 % of
the memory available (MemAvailable on CPU, free GPU memory on CUDA). Our rows run with
`fused_layers='auto'` (fused elementwise stretches on CUDA, eager on CPU); ``--unfused`` backends also run with ``fused_layers='off'`` (variant
``ours-<backend>-unfused``), which shows what the fusion is worth; ``--fused`` backends run
with ``fused_layers='compile'`` (``ours-<backend>-fused``, e.g. to measure the fusion on CPU).
Also two training steps in tokens/s: an MLM step (our MLM head on 30 % masked tokens, loss, backward) and a CPT
cached-gradient step (``training.gradcache.cached_step``: queries = each document's first 64
tokens, InfoNCE over the batch, documents in chunks of ``--cpt-chunk``). bf16 (autocast) on
CUDA, fp32 on CPU.

    python benchmarks/gpu_encoder.py --size base --out benchmarks/gpu_encoder.json      # on a GPU
    python benchmarks/gpu_encoder.py --device cpu --size tiny --docs 8                   # smoke run, seconds
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not

from benchmarks.encoder_throughput import CLS, EOS, PAD, VOCAB, model_flops  # noqa: E402

SIZES = {
    "base": dict(hidden=768, layers=12, heads=12, inner=3072),
    "small": dict(hidden=384, layers=6, heads=6, inner=1536),
    "tiny": dict(hidden=64, layers=2, heads=4, inner=128),
}
PROTOCOLS = {  # lognormal lengths: median, sigma, cap; documents a batch
    "long": dict(median=3600.0, sigma=0.7, cap=8192, batch=16),
    "short": dict(median=256.0, sigma=0.6, cap=512, batch=128),
}


def significant(x: float, digits: int = 3) -> float:
    """`x` to `digits` significant figures (a tiny model's TFLOP/s must not round to 0)."""
    return float(f"{x:.{digits}g}")


def lengths_for(protocol: str, docs: int, max_len: int | None, seed: int = 0) -> list[int]:
    import numpy as np

    p = PROTOCOLS[protocol]
    cap = min(p["cap"], max_len or p["cap"])
    rng = np.random.default_rng(seed)
    return [int(min(cap, max(8, rng.lognormal(math.log(min(p["median"], cap / 2)), p["sigma"])))) for _ in range(docs)]


def batches_of(lengths: list[int], size: int, order: str) -> list[list[int]]:
    if order == "sorted":
        lengths = sorted(lengths, reverse=True)
    return [lengths[i:i + size] for i in range(0, len(lengths), size)]


def make_ids(lengths: list[int], device, seed: int):
    """Packed ids with cu_seqlens, and the same documents padded: (packed, cu, padded, mask)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    docs = [torch.randint(4, VOCAB, (n,), generator=g) for n in lengths]
    for d in docs:
        d[0], d[-1] = CLS, EOS
    packed = torch.cat(docs)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    padded = torch.full((len(docs), max(lengths)), PAD, dtype=torch.long)
    mask = torch.zeros_like(padded)
    for row, d in enumerate(docs):
        padded[row, :len(d)], mask[row, :len(d)] = d, 1
    return packed.to(device), cu.to(device), padded.to(device), mask.to(device)


class Meter:
    """Wall time with device synchronisation, and peak memory since the last reset: CUDA's max
    allocated, or on CPU the resident set sampled every 5 ms by a thread (``ru_maxrss`` is the
    whole process's peak, so a row would report the largest earlier row's)."""

    def __init__(self, device):
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"
        self._peak, self._stop, self._thread = 0, threading.Event(), None

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self.rss())

    def reset(self):
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
            return
        self._halt()
        self._peak, self._stop = self.rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _halt(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def peak_gb(self) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 2**30
        self._halt()
        return max(self._peak, self.rss()) / 2**30


def matmul_tflops(device, dtype, n: int) -> float:
    import torch

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    meter = Meter(device)
    a @ b
    meter.sync()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ b
        meter.sync()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


# ---- memory: every row estimates its peak first and is skipped when it would not fit --------------
MEMORY_SHARE = 0.8  # of the memory available when the row starts


def available_bytes(device) -> int:
    """Free device memory on CUDA; on CPU the kernel's MemAvailable (/proc/meminfo), else psutil's."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def attention_scores(variant: str, cuda: bool) -> str | None:
    """How the variant's attention holds (heads, len, len) scores: ``"document"`` (our eager
    reference, one document at a time), ``"padded"`` (SDPA on nested tensors on CPU: PyTorch's
    math fallback pads the batch, measured ~5.4 padded score tensors alive at once on tiny,
    4 x 4096 tokens), or None (flash / memory-efficient kernels, and CPU SDPA with HF's mask,
    which holds only the mask: measured)."""
    backend = variant[len("ours-"):].partition("-")[0] if variant.startswith("ours-") else variant
    if backend == "eager":
        return "document"
    return "padded" if backend == "njt" and not cuda else None


def estimate_bytes(variant: str, size: dict, batches: list[list[int]], backward: bool, cuda: bool,
                   head_tokens: float = 0.0) -> int:
    """A row's peak memory, estimated from its shapes (fp32 on CPU, bf16 activations on CUDA):
    the parameters (and their gradients), the activations a layer keeps for backward (about
    8 x hidden + 2 x inner values a token, every layer with backward, two layers' worth without),
    HF's padded additive mask (batch x len x len, 2 copies, 3 with backward), the score tensors (heads x len x len x 4 bytes)
    of the variants that hold them (:func:`attention_scores`: 3 alive for one document, 6 for a
    padded batch, and every layer's kept for backward), and an MLM head's logits (``head_tokens``
    x vocabulary x 4 bytes, three copies). The largest batch decides."""
    h, n_layers, heads, inner = size["hidden"], size["layers"], size["heads"], size["inner"]
    act = 2 if cuda else 4
    params = VOCAB * h + n_layers * (4 * h * h + 3 * h * inner)
    scores = attention_scores(variant, cuda)
    peak = 0
    for lengths in batches:
        padded = variant.startswith("hf-")
        longest = max(lengths)
        tokens = len(lengths) * longest if padded else sum(lengths)
        need = tokens * (8 * h + 2 * inner) * act * (n_layers if backward else 2)
        if padded:  # the additive mask and its expanded copies (measured: ~2 forward, ~2.3 with backward)
            need += (3 if backward else 2) * len(lengths) * longest ** 2 * act
        if scores == "document":
            need += 3 * heads * longest ** 2 * 4 + (n_layers * heads * sum(n * n for n in lengths) * 4 if backward else 0)
        elif scores == "padded":
            need += (6 + (n_layers if backward else 0)) * heads * len(lengths) * longest ** 2 * 4
        need += int(head_tokens * sum(lengths)) * VOCAB * 4 * 3
        peak = max(peak, need)
    return params * 4 * (2 if backward else 1) + peak


def memory_skip(need: int, device) -> str | None:
    """The reason to skip a row whose estimated peak exceeds :data:`MEMORY_SHARE` of what is free."""
    free = available_bytes(device)
    if need <= MEMORY_SHARE * free:
        return None
    return (f"estimated peak {need / 2**30:.1f} GB > {MEMORY_SHARE:.0%} of the {free / 2**30:.1f} GB available "
            f"({'GPU' if device.type == 'cuda' else 'MemAvailable'})")


def build(variant: str, size: dict, device, max_len: int):
    """-> (model, call(packed, cu, padded, mask) -> a tensor over real tokens only)."""
    import torch

    if variant.startswith("ours-"):
        from model import MGTEModel

        backend, _, suffix = variant[len("ours-"):].partition("-")
        fused = {"": "auto", "unfused": "off", "fused": "compile"}[suffix]
        model = MGTEModel(our_config(size, backend, fused, dropout=0.0)).to(device)
        return model, lambda packed, cu, padded, mask: model(packed, cu_seqlens=cu)
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig(vocab_size=VOCAB, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                              num_attention_heads=size["heads"], intermediate_size=size["inner"], type_vocab_size=1,
                              max_position_embeddings=max_len + 2, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    config._attn_implementation = "sdpa"
    model = XLMRobertaModel(config, add_pooling_layer=False).to(device)
    return model, lambda packed, cu, padded, mask: model(input_ids=padded, attention_mask=mask).last_hidden_state[
        mask.bool()]


def run_batches(call, model, inputs, backward: bool, autocast, meter: Meter) -> float:
    import torch

    model.train(backward)
    meter.sync()
    t0 = time.perf_counter()
    for packed, cu, padded, mask in inputs:
        with autocast():
            if backward:
                call(packed, cu, padded, mask).float().square().mean().backward()
            else:
                with torch.inference_mode():
                    call(packed, cu, padded, mask)
    if backward:
        model.zero_grad(set_to_none=True)
    meter.sync()
    return time.perf_counter() - t0


def our_config(size: dict, backend: str, fused: str, dropout: float = 0.1):
    from model import MGTEConfig

    return MGTEConfig(hidden_size=size["hidden"], num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
                      intermediate_size=size["inner"], hidden_dropout_prob=dropout, attn_backend=backend,
                      fused_layers=fused)


def timed_steps(step, inputs, meter: Meter) -> float:
    """One warm-up step (compiles, plans), then every batch; seconds."""
    step(inputs[0])
    meter.reset()
    meter.sync()
    t0 = time.perf_counter()
    for batch in inputs:
        step(batch)
    meter.sync()
    return time.perf_counter() - t0


def step_row(variant: str, model, tokens: int, seconds: float, meter: Meter) -> dict:
    return {"variant": variant, "backend_used": model.attn_backend_used, "fused_used": model.fused_layers_used,
            "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 3),
            "peak_gb": round(meter.peak_gb(), 2)}


def mlm_step(size: dict, inputs, device, autocast, meter: Meter, backend: str) -> dict:
    """Our MLM model (head on masked tokens only): loss + backward over the batches."""
    import torch

    from model import MGTEForMaskedLM

    model = MGTEForMaskedLM(our_config(size, backend, "auto")).to(device).train()
    g = torch.Generator().manual_seed(3)

    def step(batch):
        packed, cu = batch[:2]
        labels = torch.full_like(packed, -100)
        chosen = (torch.rand(packed.shape, generator=g) < 0.3).to(device)
        labels[chosen] = packed[chosen]
        with autocast():
            loss = model(packed.masked_fill(chosen, 4), cu_seqlens=cu, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    seconds = timed_steps(step, inputs, meter)
    return step_row("ours-mlm-step", model.new, sum(int(cu[-1]) for _, cu, _, _ in inputs), seconds, meter)


def cpt_step(size: dict, inputs, device, autocast, meter: Meter, backend: str, chunk: int) -> dict:
    """Our encoder in a CPT cached-gradient step: queries = every document's first 64 tokens,
    InfoNCE (t = 0.05) of the queries against the batch's documents, embeddings without grad
    first, then each chunk of ``chunk`` documents re-run with its cached embedding gradient."""
    import torch

    from model import MGTEModel
    from training.contrastive import in_batch_loss
    from training.gradcache import cached_step

    model = MGTEModel(our_config(size, backend, "auto")).to(device).train()

    def encode(piece):
        ids, cu = piece
        with autocast():
            hidden = model(ids, cu_seqlens=cu)
        return hidden[cu[:-1].long()]  # [CLS] (n, H)

    def pieces(packed, cu, first: int | None):
        bounds, out = cu.tolist(), []
        for i in range(0, len(bounds) - 1, chunk):
            docs = [packed[a:(b if first is None else min(b, a + first))] for a, b in zip(bounds[i:i + chunk],
                                                                                       bounds[i + 1:i + chunk + 1])]
            lengths = torch.tensor([0] + [len(d) for d in docs])
            out.append((torch.cat(docs), lengths.cumsum(0).to(torch.int32).to(device)))
        return out

    prepared = [(pieces(packed, cu, 64), pieces(packed, cu, None)) for packed, cu, _, _ in inputs]

    def step(batch):
        queries, documents = batch
        cached_step(encode, queries, documents, lambda q, d: in_batch_loss(q, d, 0.05), device=device)
        model.zero_grad(set_to_none=True)

    seconds = timed_steps(step, prepared, meter)
    tokens = sum(int(cu[-1]) for q, d in prepared for _, cu in q + d)
    return step_row("ours-cpt-cached-step", model, tokens, seconds, meter) | {"chunk_docs": chunk}


def main(argv=None) -> int:
    import contextlib

    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=sorted(SIZES), default="base")
    ap.add_argument("--docs", type=int, default=None, help="documents per protocol (default: 256 long, 4096 short)")
    ap.add_argument("--max-len", type=int, default=None, help="cap the lengths (smoke runs)")
    ap.add_argument("--protocols", nargs="+", default=["long", "short"], choices=sorted(PROTOCOLS))
    ap.add_argument("--backends", nargs="+", default=None, help="ours: attention backends (default: all that run)")
    ap.add_argument("--unfused", nargs="*", default=None,
                    help="backends also run with fused_layers='off' (default: auto on CUDA, none on CPU)")
    ap.add_argument("--fused", nargs="*", default=[],
                    help="backends also run with fused_layers='compile' (variant ours-<backend>-fused; CPU: compiles)")
    ap.add_argument("--no-mlm", action="store_true")
    ap.add_argument("--no-cpt", action="store_true")
    ap.add_argument("--cpt-chunk", type=int, default=None, help="documents a CPT chunk (default: 4 long, 32 short)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    from model.attention import backend_available

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if cuda else contextlib.nullcontext
    if args.backends is None:
        args.backends = ["auto", "njt", "sdpa"] + [b for b in ("varlen", "flash", "xformers", "flex")
                                                    if cuda and backend_available(b)]
    if args.unfused is None:
        args.unfused = ["auto"] if cuda else []
    variants = ["hf-sdpa"] + [f"ours-{b}" for b in args.backends] + [f"ours-{b}-unfused" for b in args.unfused] \
        + [f"ours-{b}-fused" for b in args.fused]
    size, meter = SIZES[args.size], Meter(device)
    peak = matmul_tflops(device, dtype, 4096 if cuda else 1024)
    rows: list[dict] = []
    for protocol in args.protocols:
        docs = args.docs or (256 if protocol == "long" else 4096)
        lengths = lengths_for(protocol, docs, args.max_len)
        max_len = max(lengths)
        for order in ("arrival", "sorted") if protocol == "long" else ("arrival",):
            inputs = [make_ids(b, device, seed=i) for i, b in enumerate(batches_of(lengths, PROTOCOLS[protocol]["batch"],
                                                                                      order))]
            for mode in ("fwd", "fwdbwd"):
                backward = mode == "fwdbwd"
                flops = sum(model_flops(size, [int(n) for n in (cu[1:] - cu[:-1]).tolist()], glu=True,
                                        backward=backward) for _, cu, _, _ in inputs)
                group = []
                for variant in variants:
                    row = {"protocol": protocol, "order": order, "mode": mode, "variant": variant,
                           "docs": docs, "tokens": sum(lengths)}
                    need = estimate_bytes(variant, size, [(cu[1:] - cu[:-1]).tolist() for _, cu, _, _ in inputs],
                                          backward, cuda)
                    row["estimated_peak_gb"] = round(need / 2**30, 2)
                    if (reason := memory_skip(need, device)) is not None:
                        row["skipped"] = reason
                        group.append(row)
                        continue
                    try:
                        model, call = build(variant, size, device, max_len)
                        run_batches(call, model, inputs[:1], backward, autocast, meter)  # warm-up
                        meter.reset()
                        seconds = run_batches(call, model, inputs, backward, autocast, meter)
                    except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is a row that says why
                        row["skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                        group.append(row)
                        continue
                    row.update(seconds=round(seconds, 3), tokens_per_s=round(sum(lengths) / seconds, 1),
                               tflops_real=significant(flops / seconds / 1e12),
                               peak_share=significant(flops / seconds / 1e12 / peak), peak_gb=round(meter.peak_gb(), 2),
                               backend_used=getattr(model, "attn_backend_used", None),
                               fused_used=getattr(model, "fused_layers_used", None))
                    group.append(row)
                    del model
                    if cuda:
                        torch.cuda.empty_cache()
                hf = next((r for r in group if r["variant"] == "hf-sdpa" and "seconds" in r), None)
                for r in group:
                    if hf and "seconds" in r:
                        r["x_hf_padded"] = significant(r["tokens_per_s"] / hf["tokens_per_s"])
                    print(json.dumps(r), flush=True)
                rows += group
            if order != "arrival":
                continue
            chunk = args.cpt_chunk or (4 if protocol == "long" else 32)
            batches = [(cu[1:] - cu[:-1]).tolist() for _, cu, _, _ in inputs]
            for mode, skip, run_step, need in (
                    ("mlm-step", args.no_mlm, lambda: mlm_step(size, inputs, device, autocast, meter, "auto"),
                     estimate_bytes("ours-auto", size, batches, True, cuda, head_tokens=0.3)),
                    ("cpt-step", args.no_cpt, lambda: cpt_step(size, inputs, device, autocast, meter, "auto", chunk),
                     estimate_bytes("ours-auto", size, [b[i:i + chunk] for b in batches
                                                        for i in range(0, len(b), chunk)], True, cuda))):
                if not skip:
                    r = {"protocol": protocol, "order": order, "mode": mode,
                         "variant": "ours-mlm-step" if mode == "mlm-step" else "ours-cpt-cached-step",
                         "estimated_peak_gb": round(need / 2**30, 2)}
                    if (reason := memory_skip(need, device)) is not None:
                        r["skipped"] = reason
                    else:
                        r.update(run_step())
                    print(json.dumps(r), flush=True)
                    rows.append(r)
    result = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "torch": torch.__version__,
              "dtype": str(dtype), "size": args.size, "matmul_peak_tflops": round(peak, 2), "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
