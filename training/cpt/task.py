"""CPT's task for the shared loop: in-batch InfoNCE over [CLS] embeddings in a cached-gradient step."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import torch

from model.heads import cls_pool
from training.contrastive import gather_no_grad, in_batch_loss
from training.cpt.config import Config
from training.cpt.data import PairBatches, load_pairs
from training.embedder import EmbedderTask, nonfinite_on_any_rank, write_sentence_transformers_files
from training.gradcache import cached_step
from training.model_builder import is_hf_encoder, write_model
from training.steppers import StepContext


class CPTTask(EmbedderTask):
    """Model, data and the cached-gradient contrastive step for :func:`training.loop.train_loop`."""

    def __init__(self, cfg: Config, tables: dict[str, pa.Table] | None = None):
        super().__init__(cfg)
        self._tables = tables

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
        from model.hf import write_model_dir

        def write(tmp: Path) -> None:  # the sentence-transformers files inside the directory's checksums
            write_model(model, tmp, tokenizer=self.tokenizer)
            remote = not is_hf_encoder(model) or "auto_map" in json.loads((tmp / "config.json").read_text())
            write_sentence_transformers_files(tmp, self.data_config.doc_max_tokens, trust_remote_code=remote)

        write_model_dir(out_dir, write)
