"""The TRM's task for the shared loop: the encoder + sparse head, hard-negative batches, and the joint
cached-gradient step (Matryoshka dense + sparse InfoNCE, :mod:`training.trm.loss`) with the sparse
head's health checked every step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from foundation.errors import ConfigError, MgteError
from training.contrastive import gather_no_grad, gather_with_grad, rank
from training.distributed import all_reduce_sum
from training.embedder import EmbedderTask, nonfinite_on_any_rank
from training.gradcache import cached_step, full_batch_step, texts_in
from training.model_builder import is_hf_encoder, is_random, resolve_init
from training.steppers import StepContext
from training.trm.config import Config
from training.trm.data import HardNegativeBatches, clean_rows, read_hard_negatives, row_lengths
from training.trm.loss import (LossSettings, candidate_mask, encode_row, false_negative_mask, own_candidates,
                               query_vocab, split_row, trm_loss)
from training.trm.matryoshka import dim_weights, matryoshka_dims
from training.trm.model import TRMEmbedder, init_sparse_head, save_trm
from training.trm.sparse import sparsity_health

log = logging.getLogger(__name__)


class SparseCollapse(MgteError):
    """The sparse head gave only all-zero vectors for too many steps in a row (docs/reliability.md row 31)."""


def resolve_pooling(pooling: str, init_dir: Path | None, ours: bool) -> str:
    """``auto``: [CLS] for our encoder; else the init's sentence-transformers / TRM pooling, [CLS] if none."""
    if pooling == "mean" and ours:
        raise ConfigError("pooling=mean: our encoder's TRM pools [CLS] (mGTE 2.2; its encode API and AutoModel "
                          "users read the first token); use pooling: cls or auto")
    if pooling != "auto":
        return pooling
    if ours or init_dir is None:
        return "cls"
    trm = init_dir / "trm.json"
    if trm.is_file():
        return json.loads(trm.read_text())["pooling"]
    st = init_dir / "1_Pooling" / "config.json"
    if st.is_file() and json.loads(st.read_text()).get("pooling_mode_mean_tokens"):
        return "mean"
    return "cls"


class TRMTask(EmbedderTask):
    """Model, data and the joint cached-gradient step; tokenizer, init and length clipping as CPT
    (:class:`training.embedder.EmbedderTask`)."""

    def __init__(self, cfg: Config, rows: dict | None = None):
        super().__init__(cfg)
        self._rows = rows
        self.zero_streak = 0  # steps in a row whose sparse vectors were all zero
        self.steps_seen = 0
        self.dims: tuple[int, ...] = ()
        self.health_log: Path | None = Path(cfg.output) / "sparsity.jsonl" if cfg.output else None

    def build_model(self):
        encoder = super().build_model()
        init_dir = None if is_random(self.cfg.init) else resolve_init(self.cfg.init)
        pooling = resolve_pooling(self.cfg.pooling, init_dir, not is_hf_encoder(encoder))
        model = TRMEmbedder(encoder, pooling, self.tokenizer.all_special_ids)
        if init_sparse_head(model.sparse_head, init_dir):
            log.info("trm: sparse head continued from %s", init_dir)
        model.set_gradient_checkpointing(self.cfg.data.gradient_checkpointing)
        self.dims = matryoshka_dims(model.hidden_size, self.cfg.loss.dim_step)
        self.settings = LossSettings(
            dims=self.dims, dim_weights=dim_weights(self.dims, self.cfg.loss.dim_weights),
            mrl_temperature=self.cfg.loss.mrl_temperature, sparse_temperature=self.cfg.loss.sparse_temperature,
            sparse_weight=self.cfg.loss.sparse_weight, sparse_l1=self.cfg.loss.sparse_l1,
            false_negative_margin=self.cfg.loss.false_negative_margin)
        log.info("trm: %s pooling, Matryoshka sizes %s", pooling, list(self.dims))
        return model

    def build_data(self, rank: int, world_size: int) -> HardNegativeBatches:
        rows = self._rows if self._rows is not None else clean_rows(
            read_hard_negatives(self.cfg.input), self.cfg.data.num_negatives)[0]
        d = self.data_config
        lengths = row_lengths(self.tokenizer, rows, d.query_max_tokens, d.doc_max_tokens)
        return HardNegativeBatches(rows, lengths, self.tokenizer, d.groups, query_max_tokens=d.query_max_tokens,
                                   doc_max_tokens=d.doc_max_tokens, seed=d.seed, alpha=d.alpha, rank=rank,
                                   world_size=world_size)

    def train_step(self, ctx: StepContext, model, micro_batches: list[dict]):
        (mb,) = micro_batches
        s, hidden = self.settings, getattr(model, "module", model).hidden_size
        special = getattr(model, "module", model).special_token_ids
        vocab = query_vocab(mb["queries"])
        group = 1 + self.cfg.data.num_negatives
        stats: dict = {}

        def encode(chunk: dict) -> torch.Tensor:
            with ctx.autocast():
                dense, weights = model(chunk["input_ids"], chunk["cu_seqlens"], chunk["max_seqlen"])
            return encode_row(dense, weights, chunk["input_ids"], chunk["cu_seqlens"], vocab, special)

        def loss_fn(q_row: torch.Tensor, d_row: torch.Tensor) -> torch.Tensor:
            q, q_terms, q_l1, q_nz = split_row(q_row, hidden)
            d_all = gather_with_grad(d_row)  # (world * N, ...)
            d, d_terms, _, _ = split_row(d_all, hidden)
            _, _, d_l1, d_nz = split_row(d_row, hidden)
            batch, n_local = q.shape[0], d_row.shape[0]
            labels = torch.arange(batch, device=q.device) * group + rank() * n_local
            mask = None
            if self.cfg.loss.mask_duplicates:
                mask = candidate_mask(mb["query_hash"], gather_no_grad(mb["doc_hash"]),
                                      gather_no_grad(mb["doc_query_hash"]), gather_no_grad(mb["doc_is_positive"]),
                                      labels)
            if s.false_negative_margin is not None:
                own = own_candidates(batch, group, rank() * n_local, d.shape[0], q.device)
                fn = false_negative_mask(q, d, labels, own, s.false_negative_margin)
                stats["false_negatives"] = float(fn.sum())
                mask = fn if mask is None else mask | fn
            parts = trm_loss(q, d, q_terms, d_terms, s, labels=labels, mask=mask,
                             l1=torch.cat([q_l1, d_l1]))
            with torch.no_grad():
                sims = torch.nn.functional.normalize(q.float(), dim=-1) @ \
                    torch.nn.functional.normalize(d.float(), dim=-1).T
                if mask is not None:
                    sims = sims.masked_fill(mask, float("-inf"))
                stats["correct"] = float((sims.argmax(dim=1) == labels).sum())
            stats.update(dense=float(parts["dense"].detach()), sparse=float(parts["sparse"].detach()),
                         q=sparsity_health(q_nz, q_l1), d=sparsity_health(d_nz, d_l1))
            loss = parts["loss"]
            return loss * float("nan") if ctx.poison else loss

        skip = lambda loss: nonfinite_on_any_rank(loss, ctx.device)  # noqa: E731
        if texts_in(mb["queries"]) + texts_in(mb["documents"]) <= mb["sub_batch"]:
            # the whole batch fits in one sub-batch: one graph, no second forward
            loss = full_batch_step(encode, mb["queries"], mb["documents"], loss_fn, backward=ctx.backward,
                                   skip_backward=skip)
        else:
            loss = cached_step(encode, mb["queries"], mb["documents"], loss_fn, device=ctx.device,
                               backward=ctx.backward, no_sync=lambda: ctx.no_sync(False), skip_backward=skip)
        n = int(mb["query_hash"].shape[0])
        health = self._check_health(stats, ctx)
        metrics = {"accuracy": stats.get("correct", 0.0), "loss_dense": stats.get("dense", 0.0) * n,
                   "loss_sparse": stats.get("sparse", 0.0) * n, **{k: v * n for k, v in health.items()}}
        if "false_negatives" in stats:
            metrics["false_negatives_masked"] = stats["false_negatives"]
        return float(loss) * n, n, metrics, int(mb["tokens"])

    def _check_health(self, stats: dict, ctx: StepContext) -> dict:
        """Global sparsity figures of this step; stops the run when the head stays dead."""
        keys = ("zero", "terms", "mass", "count")
        sums = torch.tensor([stats[side][k] for side in ("q", "d") for k in keys], dtype=torch.float64,
                            device=ctx.device)
        qz, qt, qm, qc, dz, dt, dm, dc = all_reduce_sum(sums).tolist()
        health = {"sparse_zero_queries": qz / max(qc, 1), "sparse_zero_docs": dz / max(dc, 1),
                  "sparse_terms_queries": qt / max(qc, 1), "sparse_terms_docs": dt / max(dc, 1),
                  "sparse_mean_weight": (qm + dm) / max(qt + dt, 1)}
        self.zero_streak = self.zero_streak + 1 if qz + dz >= qc + dc else 0
        self.steps_seen += 1
        if self.health_log is not None and ctx.world.rank == 0:
            self.health_log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.health_log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"call": self.steps_seen, **health}) + "\n")
        if self.zero_streak >= self.cfg.health.collapse_steps:
            raise SparseCollapse(
                f"train trm: the sparse head collapsed: every sparse vector was all-zero for {self.zero_streak} "
                f"steps in a row (health.collapse_steps={self.cfg.health.collapse_steps}); no model saved. "
                "Lower loss.sparse_l1 or the learning rate, or raise loss.sparse_weight")
        return health

    def save_model(self, model, out_dir: Path) -> None:
        if self.zero_streak:
            raise SparseCollapse(f"train trm: the last step's sparse vectors were all zero; not saving a dead "
                                 f"sparse head to {out_dir}")
        if not is_hf_encoder(model.encoder):
            model.encoder.set_rope_theta(None)
        save_trm(model, out_dir, tokenizer=self.tokenizer, max_seq_length=self.data_config.doc_max_tokens,
                 dims=self.dims)
