"""The TRM being trained: any packed encoder (ours or an HF family's adapter) + dense pooling +
the sparse head w_t = ReLU(W h_t) (mGTE 2.2), and how it is saved.

The saved directory (CONTRACT "Models") is the encoder's own HF directory (ours: ``MGTEForEmbedding``
with the head as ``classifier``, ``auto_map`` for ``AutoModel``; another family: its
``save_pretrained``), a sentence-transformers model of the dense vector, and the sparse side in
``sparse/`` (a SparseEncoder over the same weights)::

    modules.json                       Transformer -> Pooling (the TRM's: cls or mean) -> Normalize
    config_sentence_transformers.json  model_type SentenceTransformer, cosine
    sentence_bert_config.json          max_seq_length (+ trust_remote_code for our encoder)
    1_Pooling/                         the pooling
    sparse/modules.json                ParentTransformer ("": this directory's encoder) -> SparseTermWeights
    sparse/config_sentence_transformers.json   model_type SparseEncoder, dot
    sparse/mgte_sparse_terms.py        the modules' code (model/st_sparse.py), for trust_remote_code
    sparse/1_SparseTerms/              the head's config (hidden, vocab size, special ids) + weights
    trm.json                           pooling, Matryoshka sizes, where the head is (mgte's encode API)

``SentenceTransformer(DIR, trust_remote_code=True)`` gives mgte's dense vector (normalised; with
``truncate_dim=d`` its first d dims, the Matryoshka vector up to its norm);
``SparseEncoder(DIR/sparse, trust_remote_code=True)`` gives mgte's sparse term weights.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
from torch import nn

from model.heads import SparseHead, cls_pool, mean_pool
from training.model_builder import is_hf_encoder

SPARSE_DIR = "sparse/1_SparseTerms"  # the head, inside the SparseEncoder sub-directory
OLD_SPARSE_DIRS = ("1_SparseTerms",)  # where TRMs written before it kept the head
TRM_FILE = "trm.json"


class TRMEmbedder(nn.Module):
    """Packed input -> (dense (n, H) pooled states, token weights (total,) >= 0)."""

    base_model_prefix = "encoder"  # the sparse head is the task head (optim.head_lr applies to it)

    def __init__(self, encoder: nn.Module, pooling: str, special_token_ids):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be cls or mean, got {pooling!r}")
        self.encoder = encoder
        self.sparse_head = SparseHead(encoder.config.hidden_size)
        # a fresh head starts as plain term matching (every token weight 1, W = 0) so that ReLU is
        # active and gradients flow: a random W on anisotropic hidden states can start all-zero
        nn.init.zeros_(self.sparse_head.weight)
        nn.init.ones_(self.sparse_head.bias)
        self.pooling = pooling
        self.special_token_ids = tuple(int(i) for i in special_token_ids)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int | None = None):
        hidden = self.encoder(input_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)  # (total, H)
        pool = cls_pool if self.pooling == "cls" else mean_pool
        return pool(hidden, cu_seqlens), self.sparse_head(hidden)  # (n, H), (total,)

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute each layer in backward (memory: one layer's activations per sub-batch)."""
        if is_hf_encoder(self.encoder):
            hf = self.encoder.hf
            if not on:
                (getattr(hf, "activation_checkpointing_disable", None) or hf.gradient_checkpointing_disable)()
            elif hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x
                hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.encoder.encoder.gradient_checkpointing = on


def init_sparse_head(head: SparseHead, init_dir: Path | None) -> bool:
    """Start the head from ``init_dir``'s (a TRM directory, ours or another family's) when it has one."""
    if init_dir is None:
        return False
    from safetensors.torch import load_file

    ours = init_dir / "model.safetensors"
    for where in (SPARSE_DIR, *OLD_SPARSE_DIRS):
        theirs = init_dir / where / "model.safetensors"
        if theirs.is_file():
            head.load_state_dict(load_file(str(theirs)))
            return True
    if ours.is_file():
        from safetensors import safe_open

        with safe_open(str(ours), framework="pt") as fh:
            if "classifier.weight" in fh.keys():
                head.load_state_dict({"weight": fh.get_tensor("classifier.weight"),
                                      "bias": fh.get_tensor("classifier.bias")})
                return True
    return False


def save_trm(model: TRMEmbedder, directory: Path, *, tokenizer, max_seq_length: int, dims: tuple[int, ...]) -> Path:
    """The final model directory (see the module docstring), written atomically, checksums last."""
    from model.hf import write_model_dir

    def write(tmp: Path) -> None:
        if is_hf_encoder(model.encoder):
            from training.model_builder import write_model

            write_model(model.encoder, tmp, tokenizer=tokenizer)
            remote = "auto_map" in json.loads((tmp / "config.json").read_text())
        else:
            from model import MGTEForEmbedding
            from model.hf import write_pretrained

            full = MGTEForEmbedding(model.encoder.config)
            full.new.load_state_dict(model.encoder.state_dict())
            full.classifier.load_state_dict(model.sparse_head.state_dict())
            full.config.architectures = ["MGTEForEmbedding"]
            write_pretrained(full, tmp, tokenizer=tokenizer)
            remote = True
        from training.embedder import write_sentence_transformers_files

        write_sentence_transformers_files(tmp, max_seq_length, remote, pooling=model.pooling, normalize=True)
        write_sentence_transformers_sparse(tmp, model, vocab_size=len(tokenizer) if tokenizer is not None else None)
        (tmp / TRM_FILE).write_text(json.dumps({
            "pooling": model.pooling, "matryoshka_dims": list(dims), "sparse_head": SPARSE_DIR,
            "special_token_ids": list(model.special_token_ids)}, indent=2) + "\n")

    return write_model_dir(directory, write)


def write_sentence_transformers_sparse(directory: Path, model: TRMEmbedder, *, vocab_size: int | None) -> None:
    """``sparse/``: a SparseEncoder over this directory's encoder (no second copy of its weights)."""
    from safetensors.torch import save_file

    config = json.loads((directory / "config.json").read_text())
    vocab = max(int(vocab_size or 0), int(config["vocab_size"]))
    sparse = directory / "sparse"
    head_dir = directory / SPARSE_DIR
    head_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in model.sparse_head.state_dict().items()},
              str(head_dir / "model.safetensors"))
    rel = str(Path(SPARSE_DIR).relative_to("sparse"))
    files = {
        "sparse/modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "mgte_sparse_terms.ParentTransformer"},
            {"idx": 1, "name": "1", "path": rel, "type": "mgte_sparse_terms.SparseTermWeights"}],
        "sparse/config_sentence_transformers.json": {"model_type": "SparseEncoder", "similarity_fn_name": "dot",
                                                     "prompts": {}, "default_prompt_name": None},
        f"{SPARSE_DIR}/config.json": {"hidden_size": model.hidden_size, "vocab_size": vocab,
                                      "special_token_ids": list(model.special_token_ids)},
    }
    for name, obj in files.items():
        (directory / name).write_text(json.dumps(obj, indent=2) + "\n")
    source = importlib.util.find_spec("model.st_sparse").origin  # not imported: it needs sentence-transformers
    shutil.copy2(source, sparse / "mgte_sparse_terms.py")
