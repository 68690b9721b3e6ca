"""Pairs/s and peak memory of one TRM fine-tuning step at long lengths, with and without
sub-batching + gradient checkpointing.

Each (mode, length) runs in a fresh process: the encoder with the TRM's sparse head
(:class:`training.trm.model.TRMEmbedder`), ``--queries`` queries of ``--query-len`` tokens, each
with 1 positive + ``--negatives`` hard negatives of ``length`` tokens, the joint loss (Matryoshka
InfoNCE + lambda x sparse InfoNCE, :func:`training.trm.loss.trm_loss`) and AdamW:

- ``sub``: the cached-gradient step in sub-batches of ``--sub-batch`` texts with gradient
  checkpointing inside each (what ``mgte train trm`` runs): memory is one sub-batch's;
- ``plain``: one graph over the whole batch and one backward: memory grows with the batch.

Memory is the process's peak resident set minus its resident set before the first step (model,
optimizer and data not counted). Texts are random token ids (the step, not tokenisation).

    python benchmarks/finetune_step.py                                  # tiny encoder, 512 / 2048 / 8192
    python benchmarks/finetune_step.py --lengths 512 --preset base --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, installed or not

from benchmarks.cpt_step import peak_mb, rss_mb, run_child, write_rows  # noqa: E402


def one(args: argparse.Namespace) -> dict:
    import torch

    from model import MGTEConfig, MGTEModel
    from model.heads import batch_vocab
    from model.unpad import pack_sequences
    from training.gradcache import cached_step, full_batch_step
    from training.trm.matryoshka import dim_weights, matryoshka_dims
    from training.trm.model import TRMEmbedder
    from training.trm.loss import LossSettings, encode_row, split_row, trm_loss

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    config = getattr(MGTEConfig, args.preset)(max_position_embeddings=max(8192, args.length))
    model = TRMEmbedder(MGTEModel(config), "cls", special_token_ids=(0, 1, 2, 3)).train()
    model.set_gradient_checkpointing(args.mode == "sub")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-7)
    g = torch.Generator().manual_seed(1)
    group = 1 + args.negatives

    def texts(n, length):
        ids = torch.randint(5, config.vocab_size, (n, length), generator=g)
        ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
        return ids.tolist()

    def chunks(seqs, size):
        out = []
        for i in range(0, len(seqs), size):
            ids, cu, longest = pack_sequences(seqs[i:i + size])
            out.append({"input_ids": ids, "cu_seqlens": cu, "max_seqlen": longest})
        return out

    b = args.queries
    size = args.sub_batch if args.mode == "sub" else b * group
    q_texts, d_texts = texts(b, args.query_len), texts(b * group, args.length)
    queries, docs = chunks(q_texts, size), chunks(d_texts, size)
    vocab = batch_vocab(*[torch.tensor(t) for t in q_texts])
    dims = matryoshka_dims(config.hidden_size)
    settings = LossSettings(dims=dims, dim_weights=dim_weights(dims))
    labels = torch.arange(b) * group

    def encode(chunk):
        dense, w = model(chunk["input_ids"], chunk["cu_seqlens"], chunk["max_seqlen"])
        return encode_row(dense, w, chunk["input_ids"], chunk["cu_seqlens"], vocab, model.special_token_ids)

    def loss_fn(qr, dr):
        q, qt, _, _ = split_row(qr, config.hidden_size)
        d, dt, _, _ = split_row(dr, config.hidden_size)
        return trm_loss(q, d, qt, dt, settings, labels=labels, mask=None)["loss"]

    def step():
        opt.zero_grad(set_to_none=True)
        step_fn = cached_step if args.mode == "sub" else full_batch_step
        loss = step_fn(encode, queries, docs, loss_fn, **({"device": "cpu"} if args.mode == "sub" else {}))
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
    return {"mode": args.mode, "length": args.length, "queries": b, "texts": b * (group + 1), "sub_batch": size,
            "preset": args.preset, "pairs_per_s": round(b / seconds, 3), "step_s": round(seconds, 2),
            "peak_step_mb": round(peak_mb() - before, 1), "loss": round(loss, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=["tiny", "base"], default="tiny")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--queries", type=int, default=4)
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--query-len", type=int, default=32)
    p.add_argument("--sub-batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    p.add_argument("--json", help="write the rows here too")
    p.add_argument("--mode", choices=["sub", "plain"], help=argparse.SUPPRESS)  # one child run
    p.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        print(json.dumps(one(args)))
        return
    rows = []
    for length in args.lengths:
        for mode in ("sub", "plain"):
            row = run_child(__file__, args, {"mode": mode, "length": length}, skip=("json", "lengths"))
            rows.append(row)
            print(f"{row['mode']:>5} length {row['length']:>5} ({row['texts']} texts, "
                  f"sub-batch {row['sub_batch']:>2}): "
                  f"{row['pairs_per_s']:>7.3f} pairs/s, {row['step_s']:>7.2f} s/step, "
                  f"peak step memory {row['peak_step_mb']:>8.1f} MiB", flush=True)
    write_rows(rows, args.json)


if __name__ == "__main__":
    main()
