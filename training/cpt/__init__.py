"""``mgte train cpt``: contrastive pre-training of the encoder into an embedder (mGTE 2.2, B.3).

The [CLS] hidden state is the embedding, the score is cosine similarity, the loss is InfoNCE
with in-batch negatives only (t = 0.01), gathered across workers, duplicates masked by text
hash. Every global batch comes from one pair source, sources drawn by eq. 1 (alpha 0.5).
Queries are truncated to 512 tokens, documents to 1024, and RoPE runs with its base divided
by 8 (reversed NTK: 160,000 -> 20,000); the saved model keeps the original base. The
contrastive batch is independent of memory: a cached-gradient step (:mod:`training.gradcache`)
embeds it in chunks.

Input: a finished ``mgte pairs`` output directory, or raw pair files (JSONL/parquet with
``query`` and ``positive``/``document``; cleaned on the fly by the same functions as ``mgte
pairs``: empty and identical pairs dropped, exact duplicates removed). Output::

    OUTPUT/model/         HF layout (model.hf.save_pretrained) + sentence-transformers files (CLS pooling)
    OUTPUT/checkpoints/   step-N/ verified checkpoints (training.checkpoint); a rerun resumes
    OUTPUT/metrics.jsonl  loss, in-batch accuracy, lr, grad norm, pairs/s
    OUTPUT/manifest.json  config, data counts (input = kept + dropped + quarantined), result

Runs on Ray Train (``engine: ray``; CPU workers with gloo + DDP, GPU workers with nccl and
optionally DeepSpeed ZeRO) or in-process (``engine: local``), through the shared loop.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import pyarrow as pa
import torch

from foundation.config import RayConfig, build, frozen, replace
from model.heads import cls_pool
from foundation.errors import MgteError
from training.contrastive import gather_no_grad, in_batch_loss
from training.gradcache import cached_step
from training.distributed import all_reduce_sum
from training.loop import LoopConfig
from training.model_builder import ModelConfig, build_encoder, check_init, is_hf_encoder, save_model
from training.optim import OptimConfig
from training.pair_sampler import PairBatch, SourceBatchSampler, take_batch
from training.steppers import StepContext
from training.task import CustomStepTask
from training import stage as stage_io
from training.ray_entry import ScalingConfig

log = logging.getLogger(__name__)

STAGE = "train-cpt"


# ---------------------------------------------------------------------------------------------
# Config


@frozen
class DataConfig:
    batch_size: int = 16384  # global pairs per step, all from one source (split over the workers)
    chunk_size: int = 128  # texts per cached-gradient chunk: memory is one chunk's activations
    query_max_tokens: int = 512
    doc_max_tokens: int = 1024
    alpha: float = 0.5  # eq. 1 over the pair counts of the sources
    seed: int = 0
    mask_duplicates: bool = True  # in-batch texts with the same hash are not negatives

    def validate(self) -> None:
        if self.batch_size < 2 or self.chunk_size < 1:
            raise ValueError("data.batch_size must be >= 2 and data.chunk_size >= 1")
        if self.query_max_tokens < 2 or self.doc_max_tokens < 2:
            raise ValueError("data.query_max_tokens and data.doc_max_tokens must be >= 2")


@frozen
class Config:
    input: tuple[str, ...] = ()
    output: str | None = None
    init: str | None = None  # model directory or HF name to start from (the MLM-8192 encoder); null = random
    tokenizer: str = "FacebookAI/xlm-roberta-base"  # used when `init` has no tokenizer files
    model: ModelConfig = ModelConfig()
    temperature: float = 0.01
    reversed_ntk: float = 8.0  # train with RoPE base / this (160,000 -> 20,000); 1 = off; the saved config keeps it
    data: DataConfig = DataConfig()
    loop: LoopConfig = LoopConfig(
        max_steps=240_000, ckpt_every=1000, log_every=50,  # paper.yaml adds fp16 + DeepSpeed ZeRO-1 on GPUs
        optim=OptimConfig(lr=2e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-7, warmup_ratio=0.05,
                          max_grad_norm=1.0))
    engine: Literal["ray", "local"] = "ray"
    ray: RayConfig = RayConfig()
    scaling: ScalingConfig = ScalingConfig()

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.reversed_ntk <= 0:
            raise ValueError("reversed_ntk must be > 0 (1 = keep the RoPE base)")
        if self.data.batch_size % self.scaling.num_workers:
            raise ValueError(f"data.batch_size {self.data.batch_size} must be a multiple of scaling.num_workers "
                             f"{self.scaling.num_workers}")


# ---------------------------------------------------------------------------------------------
# Input pairs


def load_pairs(inputs: tuple[str, ...]) -> tuple[dict[str, pa.Table], dict]:
    """``--input``: one or more `mgte pairs` outputs, or raw pair files/directories (not mixed)."""
    from pipelines.pairs import load_pair_inputs

    return load_pair_inputs(inputs, who="train cpt")


# ---------------------------------------------------------------------------------------------
# Batches


def tokenize_chunks(tokenizer, texts: list[str], max_tokens: int, chunk_size: int) -> tuple[list[dict], int]:
    """Texts -> packed chunks {input_ids (total,), cu_seqlens (n + 1,), max_seqlen} and the token count."""
    from model.unpad import pack_sequences

    ids = tokenizer(texts, truncation=True, max_length=max_tokens, add_special_tokens=True)["input_ids"]
    chunks = []
    for start in range(0, len(ids), chunk_size):
        packed, cu, longest = pack_sequences(ids[start:start + chunk_size])
        chunks.append({"input_ids": packed, "cu_seqlens": cu, "max_seqlen": longest})
    return chunks, sum(len(x) for x in ids)


class PairBatches:
    """The loop's data source: next() -> [this rank's share of one global single-source batch]."""

    reshardable = True  # the sampler re-splits the same global batches over another world size

    def __init__(self, tables: dict[str, pa.Table], tokenizer, data: DataConfig, rank: int, world_size: int):
        self.tables, self.tokenizer, self.cfg = tables, tokenizer, data
        self.sampler = SourceBatchSampler({s: t.num_rows for s, t in tables.items()}, data.batch_size,
                                          seed=data.seed, alpha=data.alpha, rank=rank, world_size=world_size)

    def batch(self, pairs: PairBatch) -> dict:
        queries, q_tokens = tokenize_chunks(self.tokenizer, pairs.queries, self.cfg.query_max_tokens,
                                            self.cfg.chunk_size)
        docs, d_tokens = tokenize_chunks(self.tokenizer, pairs.documents, self.cfg.doc_max_tokens, self.cfg.chunk_size)
        return {"queries": queries, "documents": docs, "query_hash": pairs.query_hash, "doc_hash": pairs.doc_hash,
                "tokens": q_tokens + d_tokens, "source": pairs.source}

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        return [self.batch(take_batch(self.tables, next(self.sampler)))]

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)


# ---------------------------------------------------------------------------------------------
# The task the shared loop runs


def training_theta(config) -> float:
    """The RoPE base CPT trains with: the model's effective base divided by ``reversed_ntk``."""
    scaling = config.rope_scaling or {}
    return config.rope_theta * float(scaling.get("factor", 1.0))


def write_sentence_transformers_files(directory: Path, max_seq_length: int, trust_remote_code: bool = True) -> None:
    """modules.json + 1_Pooling (CLS) so `SentenceTransformer(dir)` loads it (``trust_remote_code``:
    our models; a model of a family transformers knows (an HF ``init``) needs none)."""
    remote = {"trust_remote_code": True} if trust_remote_code else {}
    directory = Path(directory)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False,
                                      "model_args": dict(remote),
                                      "config_args": dict(remote)},
        "1_Pooling/config.json": {"word_embedding_dimension": config["hidden_size"], "pooling_mode_cls_token": True,
                                  "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True},
        "config_sentence_transformers.json": {"similarity_fn_name": "cosine", "prompts": {},
                                              "default_prompt_name": None},
    }
    for name, obj in files.items():
        (directory / name).write_text(json.dumps(obj, indent=2) + "\n")


def nonfinite_on_any_rank(loss: torch.Tensor, device) -> bool:
    """True on every rank when the loss of any rank is not finite (the step is then skipped)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=device)
    return bool(all_reduce_sum(bad).item() > 0)


class CPTTask(CustomStepTask):
    """Model, data and the cached-gradient contrastive step for :func:`training.loop.train_loop`."""

    def __init__(self, cfg: Config, tables: dict[str, pa.Table] | None = None):
        self.cfg = cfg
        self._tables = tables
        self._tokenizer = None
        self._model_tokenizer = None
        self._max_tokens: int | None = None  # the init model's position limit (another HF family)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from model.tokenizer import load_tokenizer

            self._tokenizer = self._model_tokenizer or load_tokenizer(self.cfg.tokenizer)
        return self._tokenizer

    def build_model(self):
        model = build_encoder(self.cfg.model, self.cfg.init)
        self._model_tokenizer = getattr(model, "tokenizer", None)
        if is_hf_encoder(model):
            self._max_tokens = model.max_tokens
            log.info("cpt: %s keeps its own positions (reversed_ntk %g does not apply)", model.model_type,
                     self.cfg.reversed_ntk)
            return model
        theta = training_theta(model.config) / self.cfg.reversed_ntk
        if self.cfg.reversed_ntk != 1.0:
            model.set_rope_theta(theta)  # the config (and so the saved model) keeps the original base
        log.info("cpt: RoPE base %.0f during training (saved config: %.0f)", theta, model.config.rope_theta)
        return model

    @property
    def data_config(self) -> DataConfig:
        """``data`` with the token lengths clipped to what the model's position table takes."""
        d, limit = self.cfg.data, self._max_tokens
        if limit is None or max(d.query_max_tokens, d.doc_max_tokens) <= limit:
            return d
        log.info("cpt: token lengths clipped to the model's %d positions (queries %d -> %d, documents %d -> %d)",
                 limit, d.query_max_tokens, min(d.query_max_tokens, limit), d.doc_max_tokens,
                 min(d.doc_max_tokens, limit))
        return replace(d, query_max_tokens=min(d.query_max_tokens, limit), doc_max_tokens=min(d.doc_max_tokens, limit))

    def build_data(self, rank: int, world_size: int) -> PairBatches:
        tables = self._tables if self._tables is not None else load_pairs(self.cfg.input)[0]
        return PairBatches(tables, self.tokenizer, self.data_config, rank, world_size)

    def train_step(self, ctx: StepContext, model, micro_batches: list[dict]):
        (mb,) = micro_batches
        t = self.cfg.temperature
        hashes = ({"query_hash": mb["query_hash"], "doc_hash": mb["doc_hash"]}
                  if self.cfg.data.mask_duplicates else {})
        poison = ctx.poison  # the loop's `train_step` fault hook (action nan): a NaN batch
        stats: dict = {}

        def encode(chunk: dict) -> torch.Tensor:
            with ctx.autocast():
                hidden = model(chunk["input_ids"], cu_seqlens=chunk["cu_seqlens"], max_seqlen=chunk["max_seqlen"])
            return cls_pool(hidden, chunk["cu_seqlens"])  # (n, H): the [CLS] states

        def loss_fn(q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
            loss = in_batch_loss(q, d, t, **hashes)
            with torch.no_grad():  # in-batch top-1 accuracy against every rank's documents
                sims = torch.nn.functional.normalize(q.float(), dim=-1) @ \
                    torch.nn.functional.normalize(gather_no_grad(d.detach()).float(), dim=-1).T
                labels = torch.arange(q.shape[0], device=q.device) + ctx.world.rank * q.shape[0]
                stats["correct"] = float((sims.argmax(dim=1) == labels).sum())
            return loss * float("nan") if poison else loss

        loss = cached_step(encode, mb["queries"], mb["documents"], loss_fn, device=ctx.device,
                           backward=ctx.backward, no_sync=lambda: ctx.no_sync(False),
                           skip_backward=lambda loss: nonfinite_on_any_rank(loss, ctx.device))
        n = int(mb["query_hash"].shape[0])
        return float(loss) * n, n, {"accuracy": stats.get("correct", 0.0)}, int(mb["tokens"])

    def save_model(self, model, out_dir: Path) -> None:
        model.set_rope_theta(None)  # inference runs with the original base (revNTK recovers 8k)
        save_model(model, out_dir, tokenizer=self.tokenizer)
        remote = not is_hf_encoder(model) or "auto_map" in json.loads((Path(out_dir) / "config.json").read_text())
        write_sentence_transformers_files(out_dir, self.data_config.doc_max_tokens, trust_remote_code=remote)


# ---------------------------------------------------------------------------------------------
# Entry points


def train_func(config: dict) -> None:
    """What every Ray Train worker (or this process, ``engine: local``) runs."""
    return stage_io.worker_main(config, lambda c: build(Config, c, source="train cpt worker config"), CPTTask)


def run(cfg: Config) -> dict:
    def load(cfg: Config):
        inputs = cfg.input
        tables, data = load_pairs(inputs)  # fail fast on bad input, before any worker starts
        sizes = {s: t.num_rows for s, t in tables.items()}
        log.info("cpt: %d pairs in %d sources %s", sum(sizes.values()), len(sizes), sizes)
        if not tables:
            raise MgteError(f"train cpt: no usable pairs in {list(inputs)}")
        return data, {"sources": sizes}, cfg

    return run_train_stage(cfg, STAGE, "cpt", train_func, load)


def run_train_stage(cfg, stage: str, short: str, train_func, load_input) -> dict:
    """What ``run`` of a contrastive training stage does (CPT, TRM): absolute paths, ``init`` checked,
    the output begun (a finished one is a no-op), the input read (``load_input(cfg)`` ->
    (``{counts, dropped_by_reason}``, manifest extras, the config to train with, e.g. with the
    step count of its epochs)), training on Ray or here, the manifest."""
    cfg = stage_io.resolve_paths(cfg)
    family = check_init(cfg.model, cfg.init)  # a bad init fails before the output or any worker starts
    out, finished = stage_io.open_output(cfg, stage)
    if finished is not None:
        return finished
    data, extra, cfg = load_input(cfg)
    result = stage_io.train(train_func, cfg, out, short)
    return out.finish(
        counts=data["counts"], dropped_by_reason=data["dropped_by_reason"],
        inputs=stage_io.input_sizes(cfg.input), outputs=stage_io.MODEL_OUTPUTS,
        extra={"engine": cfg.engine, "num_workers": cfg.scaling.num_workers, "init": cfg.init, **extra,
               "final": stage_io.final_metrics(Path(cfg.output), result),
               "rope_theta_training": f"model base / {cfg.reversed_ntk:g}" if family is None
               else f"not applicable ({family} positions)"})
