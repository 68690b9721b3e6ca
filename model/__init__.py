"""mGTE models: the unpadded RoPE + GLU encoder, its heads, and Hugging Face I/O.

Importing this package needs no GPU package; GPU attention backends import their kernels
only when they run (see `model.attention.ATTENTION_BACKENDS`). The names below are imported on first
use, so `model.tokenizer` alone (a data stage counting tokens) does not import torch.
"""

import importlib

_WHERE = {
    "ATTENTION_BACKENDS": "attention",
    "backend_available": "attention",
    "MGTEConfig": "config",
    "MGTEModel": "encoder",
    "MLMHead": "heads",
    "RerankerHead": "heads",
    "SparseHead": "heads",
    "batch_vocab": "heads",
    "cls_pool": "heads",
    "sparse_term_matrix": "heads",
    "sparse_term_weights": "heads",
    "load_pretrained": "hf",
    "save_pretrained": "hf",
    "EmbeddingOutput": "modeling",
    "MGTEForEmbedding": "modeling",
    "MGTEForMaskedLM": "modeling",
    "MGTEForSequenceClassification": "modeling",
    "XLMR_TOKENIZER": "tokenizer",
    "load_tokenizer": "tokenizer",
    "pad_input": "unpad",
    "pack_sequences": "unpad",
    "position_ids_from_cu_seqlens": "unpad",
    "unpad_input": "unpad",
}

__all__ = [
    "ATTENTION_BACKENDS",
    "EmbeddingOutput",
    "MGTEConfig",
    "MGTEForEmbedding",
    "MGTEForMaskedLM",
    "MGTEForSequenceClassification",
    "MGTEModel",
    "MLMHead",
    "RerankerHead",
    "SparseHead",
    "XLMR_TOKENIZER",
    "backend_available",
    "batch_vocab",
    "cls_pool",
    "load_pretrained",
    "load_tokenizer",
    "pack_sequences",
    "pad_input",
    "position_ids_from_cu_seqlens",
    "save_pretrained",
    "sparse_term_matrix",
    "sparse_term_weights",
    "unpad_input",
]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
