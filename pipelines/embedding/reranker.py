"""Cross-encoders: score ``[CLS] q [SEP] d`` pairs with our reranker head (``MGTEForSequenceClassification``)
or any ``AutoModelForSequenceClassification`` (e.g. a ``mgte train reranker`` output).

A pair is cut as the reranker was trained (``training.reranker.data.encode_pairs``): the query first,
to at most ``min(query_max_tokens, max_length // 2)`` tokens, then the document to what is left
(the tokenizer's ``only_second`` truncation)."""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np

from foundation.progress import progress
from pipelines.embedding.resolve import (
    ModelLoadError,
    context_length,
    loading,
    mgte_tokenizer,
    model_fingerprint,
    model_kind,
    pick_device,
    resolve_model_dir,
)


class Reranker:
    """score(queries, docs) -> relevance logits of ``[CLS] q [SEP] d`` pairs."""

    def __init__(self, name_or_path: str, *, device: str = "auto", dtype: str = "float32", verify: bool = True):
        model_dir = resolve_model_dir(name_or_path)
        with loading(model_dir, f"reranker {name_or_path}"):
            self._load(model_dir, name_or_path, device, dtype, verify)

    def _load(self, model_dir, name_or_path: str, device: str, dtype: str, verify: bool) -> None:
        import torch

        from model.files import verify_checksums

        if verify:
            verify_checksums(model_dir)
        self.device = pick_device(device)
        if model_kind(model_dir) == "mgte":
            import model as mgte

            self.model = mgte.load_pretrained(model_dir, cls=mgte.MGTEForSequenceClassification, with_tokenizer=False,
                                              verify=False)
            self.tokenizer = mgte_tokenizer(model_dir)
            self.context_length = int(getattr(self.model.config, "max_position_embeddings", 8192) or 8192)
        else:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            self.model = AutoModelForSequenceClassification.from_pretrained(str(model_dir))
            self.context_length = context_length(self.model.config, self.tokenizer, 512)
        labels = int(getattr(self.model.config, "num_labels", 1))
        if labels not in (1, 2):
            raise ModelLoadError(f"reranker {name_or_path!r}: {labels} labels; a cross-encoder has 1 (or 2)")
        self.model.to(device=self.device, dtype=getattr(torch, dtype)).eval()
        self.forward_args = set(inspect.signature(self.model.forward).parameters)
        self.name, self.model_id = str(name_or_path), f"reranker:{model_fingerprint(model_dir)}"

    def score(self, queries: Sequence[str], docs: Sequence[str], *, max_length: int, max_tokens: int = 16384,
              max_batch: int = 32, query_max_tokens: int = 512) -> tuple[np.ndarray, int]:
        """One score per (query, doc) pair, and how many pairs were truncated.

        Each distinct text is tokenised once; queries are cut to their budget and documents to
        ``max_length`` tokens' worth of text before pairing, so a long document is not
        re-tokenised for every query.
        """
        import torch

        from model.batching import token_budget_batches

        max_length = min(max_length, self.context_length)
        q_len, q_cut = self._lengths(queries, max(1, min(query_max_tokens, max_length // 2)))
        d_len, d_cut = self._lengths(docs, max_length)
        extra = self.tokenizer.num_special_tokens_to_add(pair=True)
        totals = [q_len[q] + d_len[d] + extra for q, d in zip(queries, docs)]
        n_cut = sum(t > max_length for t in totals)
        scores = np.zeros(len(totals), dtype=np.float64)
        with torch.inference_mode():
            batches = token_budget_batches([min(t, max_length) for t in totals], max_tokens, longest_first=True,
                                           padded=True, max_batch=max_batch)
            for batch in progress(batches, "rerank", unit="pairs", weight=len):
                inputs = self.tokenizer([q_cut[queries[i]] for i in batch], [d_cut[docs[i]] for i in batch],
                                        padding=True, truncation="only_second", max_length=max_length,
                                        return_tensors="pt", verbose=False).to(self.device)
                if "token_type_ids" not in self.forward_args:
                    inputs.pop("token_type_ids", None)
                logits = self.model(**inputs).logits.float()  # (batch, labels)
                value = logits[:, 0] if logits.shape[-1] == 1 else logits[:, 1] - logits[:, 0]
                scores[batch] = value.cpu().numpy()
        return scores, n_cut

    def _lengths(self, texts: Sequence[str], max_length: int) -> tuple[dict[str, int], dict[str, str]]:
        """Token count (no special tokens) of each distinct text, and the text cut to ``max_length`` tokens."""
        unique = list(dict.fromkeys(texts))
        enc = self.tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        lengths, cut = {}, {}
        for text, ids, offsets in zip(unique, enc["input_ids"], enc["offset_mapping"]):
            lengths[text] = len(ids)
            cut[text] = text[: offsets[max_length - 1][1]] if len(ids) > max_length else text
        return lengths, cut


def load_reranker(name_or_path: str, *, device: str = "auto", dtype: str = "float32", verify: bool = True) -> Reranker:
    return Reranker(name_or_path, device=device, dtype=dtype, verify=verify)
