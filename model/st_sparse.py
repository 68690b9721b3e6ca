"""The TRM's sparse head as a sentence-transformers module, shipped inside every TRM directory.

A TRM directory is a `SentenceTransformer` (the dense vector); its sparse side is the sub-directory
``sparse/``: `sentence_transformers.SparseEncoder(DIR + "/sparse", trust_remote_code=True)` runs
the parent directory's Transformer (:class:`ParentTransformer`: the same weights, no second copy),
then :class:`SparseTermWeights`: w_t = ReLU(W h_t + b) per token, special tokens and padding
left out, max-pooled per vocabulary id (a token seen several times keeps its max weight) into a
vocabulary-sized vector, the same numbers as mgte's own encode API. Self-contained (torch,
safetensors and sentence-transformers only): model.hf copies it into the directory.
"""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file
from sentence_transformers.base.modules.module import Module
from sentence_transformers.base.modules.transformer import Transformer

WEIGHTS = "model.safetensors"


class ParentTransformer(Transformer):
    """The Transformer module of the directory above this one (a TRM's ``sparse/`` reuses the
    TRM's own encoder files and its ``sentence_bert_config.json``)."""

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> "ParentTransformer":
        here = os.path.abspath(os.path.join(model_name_or_path, subfolder))
        return super().load(os.path.dirname(here), subfolder="", **kwargs)


class SparseTermWeights(Module):
    """token states (batch, seq, H) -> term weights (batch, vocab_size), max over repeated tokens."""

    config_keys = ["hidden_size", "vocab_size", "special_token_ids"]

    def __init__(self, hidden_size: int, vocab_size: int, special_token_ids: list[int] | None = None):
        super().__init__()
        self.hidden_size, self.vocab_size = int(hidden_size), int(vocab_size)
        self.special_token_ids = [int(i) for i in special_token_ids or []]
        self.linear = torch.nn.Linear(self.hidden_size, 1)

    def forward(self, features: dict, **kwargs) -> dict:
        hidden = features["token_embeddings"]  # (batch, seq, H) or flattened (1, total, H)
        ids = features["input_ids"]
        if "cu_seq_lens_q" in features:  # unpadded input: one row of all tokens
            cu = features["cu_seq_lens_q"].long()
            lengths = cu[1:] - cu[:-1]
            rows = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), lengths)
            hidden, ids = hidden.reshape(-1, hidden.shape[-1]), ids.reshape(-1)
            keep = torch.ones_like(ids, dtype=torch.bool)
            batch = lengths.numel()
        else:
            batch = hidden.shape[0]
            rows = torch.arange(batch, device=ids.device)[:, None].expand_as(ids).reshape(-1)
            keep = features["attention_mask"].reshape(-1).bool()
            hidden, ids = hidden.reshape(-1, hidden.shape[-1]), ids.reshape(-1)
        special = torch.tensor(self.special_token_ids, dtype=ids.dtype, device=ids.device)
        keep = keep & ~torch.isin(ids, special)
        weights = torch.relu(self.linear(hidden.to(self.linear.weight.dtype))).squeeze(-1) * keep  # (tokens,)
        out = weights.new_zeros(batch * self.vocab_size)
        out = out.scatter_reduce(0, rows * self.vocab_size + ids.long(), weights, reduce="amax", include_self=True)
        features["sentence_embedding"] = out.view(batch, self.vocab_size)
        return features

    def get_embedding_dimension(self) -> int:
        return self.vocab_size

    get_sentence_embedding_dimension = get_embedding_dimension

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.save_config(output_path)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.linear.state_dict().items()},
                  os.path.join(output_path, WEIGHTS))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs) -> "SparseTermWeights":
        directory = os.path.join(model_name_or_path, subfolder)
        with open(os.path.join(directory, "config.json"), encoding="utf8") as fh:
            module = cls(**json.load(fh))
        module.linear.load_state_dict(load_file(os.path.join(directory, WEIGHTS)))
        return module
