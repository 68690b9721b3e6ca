"""mgte's trainers vs sentence-transformers' on the same start model, rows and settings (issue 25).

From all-MiniLM-L6-v2, on negatives mined once by ``mgte mine`` (MiniLM) over ``data/pairs/train``:

- TRM: ``mgte train trm`` (engine=local; with its sparse loss as users run it, ``mgte``, and with
  ``loss.sparse_weight=0``, ``mgte-dense``) vs ``SentenceTransformerTrainer`` with
  ``MatryoshkaLoss(MultipleNegativesRankingLoss)`` and ``BatchSamplers.NO_DUPLICATES``, the same
  rows (query, positive, the first k mined negatives as columns), steps, batch, lr, warm-up and
  linear decay, weight decay, AdamW eps, clipping, Matryoshka sizes (32, 64, ... 384, equal
  weights) and temperature (MNRL scale = 1 / t); queries cut to ``--query-max`` tokens, documents
  to ``--doc-max``. Scored by ``mgte eval`` (dense nDCG@10) on the held-out split
  (``benchmarks/cpt_heldout.py``'s sets from ``data/pairs/heldout``; ``--eval-set`` all).
- Reranker: ``mgte train reranker`` vs ``CrossEncoderTrainer`` with ``ListNetLoss`` on one-hot
  labels (positive 0, negatives -inf: the softmax cross-entropy over the group = mgte's group
  InfoNCE at t = 1), the same groups (1 positive + hard + random negatives, drawn by mgte's
  :func:`training.reranker.data.build_groups`), steps, batch, lr, head lr (``learning_rate_mapping``),
  no dropout, pair length; each reranks MiniLM's top 20 of the held-out set (``mgte eval``).

Wall time: each training run is one fresh process (imports, data, model load, training, save),
mgte and the peer alternating within a seed. Writes OUT/runs.json and prints the table.

    python benchmarks/finetune_vs_st.py --out runs/vs-st                  # defaults (sizes below)

Defaults: TRM 6 steps x 8 queries x (1 + 3 negatives), seeds 0-2 for mgte and the peer, mgte-dense
and mgte-cached on seed 0; reranker 10 steps x 4 queries x (1 + 3 hard + 2 random), seed 0; the
held-out ``all`` set (425 queries) with documents cut at 128 tokens. A training run takes 1.5-4 min
and an evaluation 1-3 min on the shared 2-core machine (load 6-26): the defaults took ~70 min there;
``--trainers mgte st --skip-reranker --seeds 0`` is the ~10-minute version.
    python benchmarks/finetune_vs_st.py --out runs/vs-st --mined runs/mine --seeds 0 --skip-reranker
    python benchmarks/finetune_vs_st.py --merge runs/a/runs.json runs/b/runs.json   # one table of both
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout, installed or not

MINILM = "all-MiniLM-L6-v2"


def minilm_path() -> str:
    from training.model_builder import resolve_init

    return str(resolve_init(MINILM))


# ---------------------------------------------------------------------------------------------
# Rows: the mined table as each trainer reads it


def trm_rows(mined: str, negatives: int) -> dict[str, list]:
    """The rows ``mgte train trm`` keeps (:func:`training.trm.data.clean_rows`)."""
    from training.trm.data import clean_rows, read_hard_negatives

    return clean_rows(read_hard_negatives([mined]), negatives)[0]


def cut_queries(tokenizer, queries: list[str], max_tokens: int) -> list[str]:
    """Queries cut as mgte cuts them: ``max_tokens`` tokens with the special tokens."""
    from training.reranker.data import cut_to_tokens

    return cut_to_tokens(tokenizer, queries, max(1, max_tokens - tokenizer.num_special_tokens_to_add()))


def st_trm_columns(rows: dict[str, list], tokenizer, query_max: int) -> dict[str, list]:
    """(anchor, positive, negative_1 .. negative_k) columns for MultipleNegativesRankingLoss."""
    k = len(rows["negatives"][0])
    cols = {"anchor": cut_queries(tokenizer, rows["query"], query_max), "positive": list(rows["positive"])}
    for j in range(k):
        cols[f"negative_{j + 1}"] = [negs[j] for negs in rows["negatives"]]
    return cols


def reranker_groups(mined: str, hard: int, random: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Every usable row's group as mgte builds it (positive, hard, random negatives; step 0)."""
    from training.reranker.data import RerankDataConfig, build_groups, draw_random_negatives, load_inputs

    table, pool, _ = load_inputs((mined,), hard)
    cfg = RerankDataConfig(hard_negatives=hard, random_negatives=random, seed=seed)
    groups = build_groups(table, draw_random_negatives(table, pool, cfg), range(table.num_rows), 0, cfg)
    return groups.queries, groups.documents


def ce_columns(queries: list[str], documents: list[list[str]], tokenizer, query_max: int,
               pair_max: int) -> dict[str, list]:
    """(query, docs, labels) for ListNetLoss: labels one-hot as log-probabilities (0, -inf ...)."""
    from training.reranker.data import cut_to_tokens

    cut = cut_to_tokens(tokenizer, queries, max(1, min(query_max, pair_max // 2)))
    labels = [[0.0] + [float("-inf")] * (len(d) - 1) for d in documents]
    return {"query": cut, "docs": documents, "labels": labels}


# ---------------------------------------------------------------------------------------------
# The peers (run in a child process, like mgte)


def _train_and_save(trainer, save, out: Path, rows: int) -> None:
    """The peer's training, timed alone (``train_s``), then its model saved to ``out/model``."""
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    save(str(out / "model"))
    (out / "peer.json").write_text(json.dumps({"train_s": train_s, "rows": rows}))


def _st_args(spec: dict, out: Path, cls):
    return cls(output_dir=str(out / "trainer"), max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
               learning_rate=spec["lr"], warmup_ratio=spec["warmup_ratio"], lr_scheduler_type="linear",
               weight_decay=spec["weight_decay"], adam_epsilon=spec["eps"], max_grad_norm=spec["max_grad_norm"],
               seed=spec["seed"], data_seed=spec["seed"], use_cpu=True, save_strategy="no", report_to="none",
               logging_steps=max(1, spec["steps"] // 4), dataloader_num_workers=0, disable_tqdm=True,
               **spec.get("extra_args", {}))


def run_st_trm(spec: dict) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    torch.set_num_threads(spec["threads"])
    out = Path(spec["output"])
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = spec["doc_max"]
    rows = trm_rows(spec["mined"], spec["negatives"])
    data = Dataset.from_dict(st_trm_columns(rows, model.tokenizer, spec["query_max"]))
    inner = losses.MultipleNegativesRankingLoss(model, scale=1.0 / spec["temperature"])
    loss = losses.MatryoshkaLoss(model, inner, matryoshka_dims=spec["dims"])
    args = _st_args(spec, out, SentenceTransformerTrainingArguments)
    args.batch_sampler = BatchSamplers.NO_DUPLICATES
    _train_and_save(SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss),
                    model.save, out, len(data))


def run_st_reranker(spec: dict) -> None:
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder.losses import ListNetLoss
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    torch.set_num_threads(spec["threads"])
    out = Path(spec["output"])
    no_dropout = {k: 0.0 for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    model = CrossEncoder(minilm_path(), num_labels=1, max_length=spec["pair_max"], device="cpu",
                         config_kwargs=no_dropout)
    queries, docs = reranker_groups(spec["mined"], spec["hard"], spec["random"], spec["seed"])
    data = Dataset.from_dict(ce_columns(queries, docs, model.tokenizer, spec["query_max"], spec["pair_max"]))
    loss = ListNetLoss(model, activation_fn=torch.nn.Identity(), mini_batch_size=spec["sub_batch"])
    args = _st_args(spec, out, CrossEncoderTrainingArguments)
    args.learning_rate_mapping = {r"classifier\.": spec["head_lr"]}
    _train_and_save(CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss),
                    model.save_pretrained, out, len(data))


def step_timing(args, mined: str) -> dict:
    """Seconds of one training step's compute (tokenise, forward, loss, backward; no optimizer) on
    the same ``--batch`` rows, mgte's variants and the peer alternating ``--step-timing`` times in
    this process (so load changes hit every variant alike): medians and ratios to the peer."""
    import types
    from contextlib import nullcontext

    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses

    from foundation.config import load_config
    import training.trm as stage
    from training.length_groups import LengthGroup
    from training.trm.data import HardNegativeBatches, row_lengths
    from training.trm.task import TRMTask

    torch.set_num_threads(args.threads)
    s = trm_settings(args)
    rows = trm_rows(mined, s["negatives"])
    idx = list(range(s["batch"]))
    whole = s["batch"] * (2 + s["negatives"])
    variants = {}
    for name, sub, weight in (("mgte", whole, 0.1), ("mgte-dense", whole, 0.0), ("mgte-cached", args.sub_batch, 0.1)):
        cfg = load_config(stage.Config, ROOT / "dags/configs/trm/tiny.yaml", [
            f"init={MINILM}", f"input=[{mined}]", "output=null", f"data.num_negatives={s['negatives']}",
            f"loss.sparse_weight={weight}", f"loss.mrl_temperature={s['temperature']}"])
        task = TRMTask(cfg, rows=rows)
        task.health_log = None
        model = task.build_model().train()
        data = HardNegativeBatches(rows, row_lengths(task.tokenizer, rows, s["query_max"], s["doc_max"]), task.tokenizer,
                                   (LengthGroup(max_length=s["doc_max"], batch_size=s["batch"], sub_batch=sub),),
                                   query_max_tokens=s["query_max"], doc_max_tokens=s["doc_max"], seed=0, rank=0,
                                   world_size=1)
        ctx = types.SimpleNamespace(device=torch.device("cpu"), autocast=nullcontext, poison=False,
                                    backward=lambda loss: loss.backward(), no_sync=lambda sync: nullcontext(),
                                    world=types.SimpleNamespace(rank=0, size=1))

        def step(task=task, model=model, data=data, ctx=ctx):
            model.zero_grad(set_to_none=True)
            task.train_step(ctx, model, [data.batch(idx)])
        variants[name] = step
    st = SentenceTransformer(minilm_path(), device="cpu")
    st.max_seq_length = s["doc_max"]
    st.train()
    loss = losses.MatryoshkaLoss(st, losses.MultipleNegativesRankingLoss(st, scale=1.0 / s["temperature"]),
                                 matryoshka_dims=s["dims"])
    cols = st_trm_columns({k: [v[i] for i in idx] for k, v in rows.items()}, st.tokenizer, s["query_max"])

    def st_step():
        st.zero_grad(set_to_none=True)
        loss([st.preprocess(c) for c in cols.values()], None).backward()
    variants["st"] = st_step
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for rep in range(args.step_timing + 1):  # the first round warms up, not counted
        for name in names[rep % len(names):] + names[:rep % len(names)]:  # each round starts elsewhere
            start = time.perf_counter()
            variants[name]()
            if rep:
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"batch": s["batch"], "texts": whole, "reps": args.step_timing, "seconds": times,
            "median_s": med, "vs_st": {k: v / med["st"] for k, v in med.items()}}


# ---------------------------------------------------------------------------------------------
# Runs


def timed(cmd: list[str], log: Path) -> float:
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}); see {log}")
    return seconds


def mgte_cmd(stage: str, config: str, mined: str, out: Path, sets: list[str]) -> list[str]:
    return [sys.executable, "-m", "dags.cli", "train", stage, "--config", config, "--input", mined,
            "--output", str(out), *[a for s in sets for a in ("--set", s)]]


def peer_cmd(kind: str, spec: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec, indent=1))
    return [sys.executable, __file__, "--child", kind, "--spec", str(out / "spec.json")]


def trm_settings(args) -> dict:
    from training.trm.matryoshka import matryoshka_dims

    return {"steps": args.steps, "batch": args.batch, "negatives": args.negatives, "lr": args.lr,
            "temperature": args.temperature, "query_max": args.query_max, "doc_max": args.doc_max,
            "dims": list(matryoshka_dims(384, 32)), "warmup_ratio": 0.0, "weight_decay": 0.01, "eps": 1e-7,
            "max_grad_norm": 1.0, "threads": args.threads}


# mgte draws each batch from one source by eq. 1; alpha 1 draws the sources in proportion to their
# rows, the mix the peers' uniform shuffle sees (the default 0.5 oversamples the small sources: for
# the reranker 0.2980 vs 0.3556 held-out nDCG@10 here, benchmarks/RESULTS.md)
SAME_SOURCE_MIX = ["data.alpha=1.0"]


def mgte_trm_sets(s: dict, seed: int, sparse_weight: float, sub_batch: int) -> list[str]:
    return ["engine=local", f"init={MINILM}", f"loop.max_steps={s['steps']}", f"loop.ckpt_every={s['steps']}",
            f"loop.log_every={max(1, s['steps'] // 4)}", f"loop.seed={seed}", f"data.seed={seed}",
            f"data.num_negatives={s['negatives']}", f"data.groups=[{{max_length: {s['doc_max']}, "
            f"batch_size: {s['batch']}, sub_batch: {sub_batch}}}]", f"data.query_max_tokens={s['query_max']}",
            f"data.doc_max_tokens={s['doc_max']}", f"loop.optim.lr={s['lr']}", f"loss.mrl_temperature={s['temperature']}",
            f"loss.sparse_weight={sparse_weight}", f"loop.optim.warmup_ratio={s['warmup_ratio']}", "loop.optim.schedule=linear",
            "loop.optim.weight_decay=0.01", "loop.optim.eps=1e-7", "loop.optim.max_grad_norm=1.0", *SAME_SOURCE_MIX]


def reranker_settings(args) -> dict:
    return {"steps": args.rr_steps, "batch": args.rr_batch, "hard": args.rr_hard, "random": args.rr_random,
            "lr": args.rr_lr, "head_lr": args.rr_head_lr, "query_max": args.rr_query_max, "pair_max": args.rr_pair_max,
            "sub_batch": args.rr_sub_batch, "warmup_ratio": 0.0, "weight_decay": 0.01, "eps": 1e-7,
            "max_grad_norm": 1.0, "threads": args.threads}


def mgte_reranker_sets(s: dict, seed: int) -> list[str]:
    return ["engine=local", f"init={MINILM}", f"loop.max_steps={s['steps']}", f"loop.ckpt_every={s['steps']}",
            f"loop.log_every={max(1, s['steps'] // 4)}", f"loop.seed={seed}", f"data.seed={seed}",
            f"data.hard_negatives={s['hard']}", f"data.random_negatives={s['random']}",
            f"data.query_max_tokens={s['query_max']}", f"data.max_length={s['pair_max']}",
            f"data.groups=[{{max_length: {s['pair_max']}, batch_size: {s['batch']}, sub_batch: {s['sub_batch']}}}]",
            f"loop.optim.lr={s['lr']}", f"loop.optim.head_lr={s['head_lr']}", "model.hidden_dropout_prob=0.0",
            f"loop.optim.warmup_ratio={s['warmup_ratio']}", "loop.optim.schedule=linear", "loop.optim.weight_decay=0.01",
            "loop.optim.eps=1e-7", "loop.optim.max_grad_norm=1.0", *SAME_SOURCE_MIX]


def evaluate(args, name: str, model: str, reranker: str | None = None) -> dict:
    """Dense (and, with a reranker, reranked) nDCG@10 / R@10 of one model on the held-out set."""
    from benchmarks.cpt_heldout import evaluate as heldout_eval

    extra = [f"format.doc_max_length={args.eval_doc_max}"]
    if reranker:
        extra = [*extra, f"reranker={reranker}", f"rerank.max_length={args.rr_pair_max}"]
    m = heldout_eval(model, args.out / "beir" / args.eval_set, args.out / "eval" / name, args.eval_config, extra)
    methods = m["methods"]
    key = "rerank" if reranker else "dense"
    got = next((v for k, v in methods.items() if k.startswith(key)), methods.get("dense"))
    return {"ndcg@10": got["ndcg@10"], "recall@10": got["recall@10"]}


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "spread": (max(values) - min(values)) if len(values) > 1 else 0.0,
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def table(results: dict) -> str:
    lines = ["| stage | trainer | nDCG@10 mean ± stdev (min-max) | R@10 mean | train wall s (mean) | wall vs peer |",
             "|---|---|---|---|---|---|"]
    for stage, by_trainer in results["summary"].items():
        peer = by_trainer.get("st", {}).get("wall_s", {}).get("mean")
        for trainer, s in by_trainer.items():
            nd, wall = s["ndcg@10"], s["wall_s"]["mean"]
            ratio = f"{wall / peer:.2f}x" if peer else "-"
            lines.append(f"| {stage} | {trainer} | {nd['mean']:.4f} ± {nd['stdev']:.4f} ({nd['min']:.4f}-{nd['max']:.4f}, "
                         f"n={nd['n']}) | {s['recall@10']:.4f} | {wall:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path)
    p.add_argument("--mined", help="an existing `mgte mine` output (else mined into OUT/mine)")
    p.add_argument("--pairs", default=str(ROOT / "data/pairs/train"))
    p.add_argument("--heldout", default=str(ROOT / "data/pairs/heldout"))
    p.add_argument("--eval-set", default="all", help="which held-out set scores the runs")
    p.add_argument("--eval-config", type=Path, default=ROOT / "dags/configs/eval/tiny.yaml")
    p.add_argument("--eval-doc-max", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--trainers", nargs="+", default=["mgte", "st", "mgte-dense", "mgte-cached"],
                   help="TRM runs: mgte (sparse loss on; the batch in one graph, as MNRL), mgte-dense (sparse "
                        "weight 0), mgte-cached (cached-gradient sub-batches of --sub-batch texts), st")
    p.add_argument("--first-seed-only", nargs="*", default=["mgte-dense", "mgte-cached"],
                   help="of --trainers, those run on the first seed only")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--query-max", type=int, default=24)
    p.add_argument("--doc-max", type=int, default=96)
    p.add_argument("--sub-batch", type=int, default=32, help="mgte-cached's sub-batch (texts; tiny.yaml's 32)")
    p.add_argument("--skip-trm", action="store_true")
    p.add_argument("--skip-reranker", action="store_true")
    p.add_argument("--rr-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--rr-trainers", nargs="+", default=["mgte", "st"], choices=["mgte", "st"])
    p.add_argument("--mgte-set", action="append", default=[], metavar="KEY=VALUE",
                   help="more --set for mgte's train commands (e.g. data.alpha=1.0), after the benchmark's")
    p.add_argument("--rr-steps", type=int, default=10)
    p.add_argument("--rr-batch", type=int, default=4)
    p.add_argument("--rr-hard", type=int, default=3)
    p.add_argument("--rr-random", type=int, default=2)
    p.add_argument("--rr-lr", type=float, default=2e-4)
    p.add_argument("--rr-head-lr", type=float, default=3e-3)
    p.add_argument("--rr-query-max", type=int, default=32)
    p.add_argument("--rr-pair-max", type=int, default=192)
    p.add_argument("--rr-sub-batch", type=int, default=24, help="pairs per forward (both trainers)")
    p.add_argument("--step-timing", type=int, metavar="REPS",
                   help="only time one step's compute of each TRM trainer, alternating REPS times (needs --mined)")
    p.add_argument("--merge", nargs="+", type=Path, metavar="RUNS_JSON",
                   help="only print the table of these runs.json files together (runs split over processes)")
    p.add_argument("--child", choices=["st-trm", "st-reranker"], help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        spec = json.loads(Path(args.spec).read_text())
        (run_st_trm if args.child == "st-trm" else run_st_reranker)(spec)
        return 0
    if args.merge:
        runs = [r for f in args.merge for r in json.loads(f.read_text())["runs"]]
        print(table({"summary": summarise(runs)}))
        return 0
    if args.step_timing:
        if not args.mined:
            p.error("--step-timing needs --mined")
        result = step_timing(args, args.mined)
        print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "step_timing.json").write_text(json.dumps(result, indent=1))
        return 0
    if args.out is None:
        p.error("--out is required")
    return run(args)


def run(args) -> int:
    from benchmarks.cpt_heldout import build_sets

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "runs": []}
    mined = args.mined
    if not mined:
        mined = str(out / "mine")
        cmd = [sys.executable, "-m", "dags.cli", "mine", "--config", "dags/configs/mine/tiny.yaml", "--input",
               args.pairs, "--output", mined, "--set", f"model={MINILM}", "--set", "engine=local"]
        results["mine_s"] = timed(cmd, out / "logs" / "mine.log")
    build_sets([args.heldout], out)
    results["start"] = evaluate(args, "start", MINILM)
    print(f"MiniLM before training: dense nDCG@10 {results['start']['ndcg@10']:.4f}", flush=True)

    def record(stage, trainer, seed, wall, model, reranker=None, extra=None):
        score = evaluate(args, f"{stage}-{trainer}-s{seed}", model, reranker)
        row = {"stage": stage, "trainer": trainer, "seed": seed, "wall_s": round(wall, 1), **score, **(extra or {})}
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        (out / "runs.json").write_text(json.dumps(results, indent=1))

    if not args.skip_trm:
        s = trm_settings(args)
        results["trm_settings"] = s
        for seed in args.seeds:
            for trainer in args.trainers:
                if trainer in args.first_seed_only and seed != args.seeds[0]:
                    continue
                run_dir = out / "trm" / f"{trainer}-s{seed}"
                if trainer == "st":
                    wall = timed(peer_cmd("st-trm", {**s, "seed": seed, "mined": mined, "output": str(run_dir)}, run_dir),
                                 run_dir / "log.txt")
                    extra = json.loads((run_dir / "peer.json").read_text())
                    record("trm", trainer, seed, wall, str(run_dir / "model"), extra=extra)
                else:
                    weight = 0.0 if trainer == "mgte-dense" else 0.1
                    whole = s["batch"] * (2 + s["negatives"])  # queries + documents: one graph
                    sub = args.sub_batch if trainer == "mgte-cached" else whole
                    cmd = mgte_cmd("trm", "dags/configs/trm/tiny.yaml", mined, run_dir,
                                   mgte_trm_sets(s, seed, weight, sub) + args.mgte_set)
                    record("trm", trainer, seed, timed(cmd, out / "logs" / f"trm-{trainer}-s{seed}.log"),
                           str(run_dir / "model"))
    if not args.skip_reranker:
        s = reranker_settings(args)
        results["reranker_settings"] = s
        for seed in args.rr_seeds:
            for trainer in args.rr_trainers:
                run_dir = out / "reranker" / f"{trainer}-s{seed}"
                if trainer == "st":
                    wall = timed(peer_cmd("st-reranker", {**s, "seed": seed, "mined": mined, "output": str(run_dir)},
                                          run_dir), run_dir / "log.txt")
                    record("reranker", trainer, seed, wall, MINILM, str(run_dir / "model"))
                else:
                    cmd = mgte_cmd("reranker", "dags/configs/reranker/tiny.yaml", mined, run_dir,
                                   mgte_reranker_sets(s, seed) + args.mgte_set)
                    record("reranker", trainer, seed, timed(cmd, out / "logs" / f"reranker-mgte-s{seed}.log"),
                           MINILM, str(run_dir / "model"))
    results["summary"] = summarise(results["runs"])
    (out / "runs.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for stage in dict.fromkeys(r["stage"] for r in runs):
        for trainer in dict.fromkeys(r["trainer"] for r in runs if r["stage"] == stage):
            rows = [r for r in runs if r["stage"] == stage and r["trainer"] == trainer]
            nd = [r["ndcg@10"] for r in rows]
            out.setdefault(stage, {})[trainer] = {
                "ndcg@10": {**summary(nd), "min": min(nd), "max": max(nd)},
                "recall@10": statistics.fmean(r["recall@10"] for r in rows),
                "wall_s": summary([r["wall_s"] for r in rows])}
    return out


if __name__ == "__main__":
    sys.exit(main())
