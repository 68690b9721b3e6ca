"""Tokens/s and peak memory of one MLM training step on CPU: unpadded vs padded.

    python benchmarks/mlm_throughput.py [--preset tiny] [--batch 16] [--min-len 32] [--max-len 512]

- ``unpadded``: what ``mgte train mlm`` runs: the batch packed without pads (cu_seqlens), the
  encoder over real tokens only, the 250k-vocab MLM head over the masked positions only
  (in chunks of ``--loss-chunk``), backward, AdamW step.
- ``padded``: the usual Hugging Face recipe: every sequence padded to the batch's longest, the
  encoder over batch x max_len positions, the head over every position (logits batch x len x
  vocab) and cross-entropy with ``ignore_index``, backward, AdamW step.

Throughput counts real (non-pad) tokens. Each mode runs in its own process; its peak memory is
the growth of the process's max RSS from after model + optimizer set-up to the end of the steps.
Sequence lengths are drawn uniformly in [min-len, max-len] with a fixed seed (identical batches
in both modes).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _batch(args):
    import numpy as np
    import torch

    from training.mlm.masking import MaskingSpec, mask_tokens, sequence_rng

    spec = MaskingSpec(mask_token_id=250001, vocab_size=250002, special_ids=(0, 1, 2, 3, 250001))
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(args.min_len, args.max_len + 1, size=args.batch)
    seqs = [np.concatenate([[0], rng.integers(5, 250000, size=n - 2), [2]]) for n in lengths]
    masked = [mask_tokens(s, sequence_rng(args.seed, i), spec) for i, s in enumerate(seqs)]
    return [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in masked]


def run_mode(args) -> dict:
    import torch
    import torch.nn.functional as F

    from model import MGTEConfig, MGTEForMaskedLM
    from training.mlm import MLMTrainModule
    from training.optim import OptimConfig, build_optimizer

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = getattr(MGTEConfig, args.preset)(attn_backend=args.attn_backend, hidden_dropout_prob=0.0)
    module = MLMTrainModule(MGTEForMaskedLM(config), args.loss_chunk)
    optimizer = build_optimizer(module, OptimConfig())
    batch = _batch(args)
    real_tokens = sum(x.numel() for x, _ in batch)
    base = _rss_mib()

    def step():
        if args.mode == "unpadded":
            ids = torch.cat([x for x, _ in batch])  # (total,)
            labels = torch.cat([y for _, y in batch])  # (total,)
            lengths = torch.tensor([x.numel() for x, _ in batch])
            cu = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)  # (batch + 1,)
            loss, _ = module(ids, labels, cu, int(lengths.max()))
            loss = loss / (labels != -100).sum()
        else:
            longest = max(x.numel() for x, _ in batch)
            ids = torch.full((len(batch), longest), config.pad_token_id, dtype=torch.long)  # (batch, longest)
            labels = torch.full((len(batch), longest), -100, dtype=torch.long)
            for i, (x, y) in enumerate(batch):
                ids[i, : x.numel()], labels[i, : y.numel()] = x, y
            cu = torch.arange(0, (len(batch) + 1) * longest, longest, dtype=torch.int32)  # every row full length
            hidden = module.mlm.new.forward_packed(ids.flatten(), cu, longest)  # (batch * longest, H)
            logits = module.mlm.lm_head(hidden, module.mlm.new.embeddings.word_embeddings.weight)  # (B*L, vocab)
            loss = F.cross_entropy(logits.float(), labels.flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    padded_tokens = len(batch) * max(x.numel() for x, _ in batch)
    return {"mode": args.mode, "preset": args.preset, "batch": args.batch, "real_tokens": real_tokens,
            "computed_positions": real_tokens if args.mode == "unpadded" else padded_tokens,
            "masked": int(sum((y != -100).sum() for _, y in batch)), "s_per_step": round(seconds, 3),
            "tokens_per_s": round(real_tokens / seconds, 1), "peak_step_mib": round(_rss_mib() - base, 1),
            "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--min-len", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--loss-chunk", type=int, default=1024)
    parser.add_argument("--attn-backend", default="sdpa")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=["unpadded", "padded"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return 0
    rows = []
    for mode in ("unpadded", "padded"):
        cmd = [sys.executable, __file__, "--mode", mode] + [a for a in (argv or sys.argv[1:])]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(out, flush=True)
    u, p = rows
    print(f"\n| mode | real tokens | computed positions | masked | s/step | tokens/s | peak step MiB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['real_tokens']} | {r['computed_positions']} | {r['masked']} | {r['s_per_step']} "
              f"| {r['tokens_per_s']} | {r['peak_step_mib']} |")
    print(f"\nunpadded/padded: {u['tokens_per_s'] / p['tokens_per_s']:.2f}x tokens/s, "
          f"{p['peak_step_mib'] / max(u['peak_step_mib'], 1e-9):.1f}x less peak step memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
