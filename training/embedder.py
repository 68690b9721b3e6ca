"""What the embedder stages share (CPT and the TRM): the encoder task base, text chunks for the
cached-gradient step, the skip of a non-finite step on every rank, and the sentence-transformers
files of a [CLS]-pooled model.

:class:`EmbedderTask` builds the encoder from ``model`` / ``init`` with RoPE run at its base divided
by ``reversed_ntk`` while training (CPT's reversed NTK: 160,000 -> 20,000; the saved config keeps the
original base), takes the tokenizer of ``init`` when it has one, and clips ``data.query_max_tokens``
/ ``data.doc_max_tokens`` to the position table of another HF family. Its config needs ``model``,
``init``, ``tokenizer``, ``reversed_ntk`` and ``data.{query,doc}_max_tokens``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from foundation.config import replace
from training.distributed import all_reduce_sum
from training.model_builder import build_encoder, is_hf_encoder
from training.task import CustomStepTask

log = logging.getLogger(__name__)


def tokenize_chunks(tokenizer, texts: list[str], max_tokens: int, chunk_size: int) -> tuple[list[dict], int]:
    """Texts -> packed chunks {input_ids (total,), cu_seqlens (n + 1,), max_seqlen} and the token count."""
    from model.unpad import pack_sequences

    ids = tokenizer(texts, truncation=True, max_length=max_tokens, add_special_tokens=True)["input_ids"]
    chunks = []
    for start in range(0, len(ids), chunk_size):
        packed, cu, longest = pack_sequences(ids[start:start + chunk_size])
        chunks.append({"input_ids": packed, "cu_seqlens": cu, "max_seqlen": longest})
    return chunks, sum(len(x) for x in ids)


def nonfinite_on_any_rank(loss: torch.Tensor, device) -> bool:
    """True on every rank when the loss of any rank is not finite (the step is then skipped)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss) else 1.0], device=device)
    return bool(all_reduce_sum(bad).item() > 0)


def training_theta(config) -> float:
    """The RoPE base the model runs with: its base times its ``rope_scaling`` factor."""
    scaling = config.rope_scaling or {}
    return config.rope_theta * float(scaling.get("factor", 1.0))


def rope_extra(cfg, family: str | None, output: Path | None = None) -> dict:
    """The manifest's note on the RoPE base during training."""
    return {"rope_theta_training": f"model base / {cfg.reversed_ntk:g}" if family is None
            else f"not applicable ({family} positions)"}


def write_sentence_transformers_files(directory: Path, max_seq_length: int, trust_remote_code: bool = True, *,
                                      pooling: str = "cls", normalize: bool = False) -> None:
    """modules.json + 1_Pooling (``pooling``: cls or mean) [+ 2_Normalize] so `SentenceTransformer(dir)`
    gives the model's dense vector (``trust_remote_code``: our models; a model of a family
    transformers knows (an HF ``init``) needs none)."""
    remote = {"trust_remote_code": True} if trust_remote_code else {}
    directory = Path(directory)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False,
                                      "model_args": dict(remote),
                                      "config_args": dict(remote)},
        "1_Pooling/config.json": {"word_embedding_dimension": config["hidden_size"],
                                  "pooling_mode_cls_token": pooling == "cls",
                                  "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
                                  "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True},
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "similarity_fn_name": "cosine",
                                              "prompts": {}, "default_prompt_name": None},
    }
    for name, obj in files.items():
        (directory / name).write_text(json.dumps(obj, indent=2) + "\n")


class EmbedderTask(CustomStepTask):
    """Tokenizer, encoder (reversed NTK) and token-length clipping of an embedder stage's task."""

    def __init__(self, cfg):
        self.cfg = cfg
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
        model = build_encoder(self.cfg.model, self.cfg.init, verify=self.cfg.verify_model)
        self._model_tokenizer = getattr(model, "tokenizer", None)
        if is_hf_encoder(model):
            self._max_tokens = model.max_tokens
            log.info("%s keeps its own positions (reversed_ntk %g does not apply)", model.model_type,
                     self.cfg.reversed_ntk)
            return model
        theta = training_theta(model.config) / self.cfg.reversed_ntk
        if self.cfg.reversed_ntk != 1.0:
            model.set_rope_theta(theta)  # the config (and so the saved model) keeps the original base
        log.info("RoPE base %.0f during training (saved config: %.0f)", theta, model.config.rope_theta)
        return model

    @property
    def data_config(self):
        """``data`` with the token lengths clipped to what the model's position table takes."""
        d, limit = self.cfg.data, self._max_tokens
        if limit is None or max(d.query_max_tokens, d.doc_max_tokens) <= limit:
            return d
        log.info("token lengths clipped to the model's %d positions (queries %d -> %d, documents %d -> %d)",
                 limit, d.query_max_tokens, min(d.query_max_tokens, limit), d.doc_max_tokens,
                 min(d.doc_max_tokens, limit))
        return replace(d, query_max_tokens=min(d.query_max_tokens, limit), doc_max_tokens=min(d.doc_max_tokens, limit))
