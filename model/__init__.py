"""mGTE models: the unpadded RoPE + GLU encoder, its heads, and Hugging Face I/O.

Importing this package needs no GPU package; GPU attention backends import their kernels
only when they run (see `model.attention.ATTENTION_BACKENDS`).
"""
from .attention import ATTENTION_BACKENDS, backend_available
from .config import MGTEConfig
from .encoder import MGTEModel
from .heads import MLMHead, RerankerHead, SparseHead, batch_vocab, cls_pool, sparse_term_matrix, sparse_term_weights
from .hf import load_pretrained, save_pretrained
from .modeling import EmbeddingOutput, MGTEForEmbedding, MGTEForMaskedLM, MGTEForSequenceClassification
from .tokenizer import XLMR_TOKENIZER, load_tokenizer
from .unpad import pad_input, pack_sequences, position_ids_from_cu_seqlens, unpad_input

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
