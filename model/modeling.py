"""Task models around the encoder: MLM, reranker (cross-encoder) and the TRM embedder.

Each takes packed input (input_ids (total,), cu_seqlens, max_seqlen, position_ids) or the
usual padded input_ids + attention_mask, which is unpadded before the encoder runs.
The encoder sits under `self.new` and heads under `lm_head` / `classifier`, the names of
the released gte-multilingual checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput
from transformers.utils import ModelOutput

from .batching import token_budget_batches
from .config import MGTEConfig
from .encoder import MGTEModel, MGTEPreTrainedModel
from .heads import MLMHead, RerankerHead, SparseHead, cls_pool, mlm_loss_sum, sparse_term_weights
from .unpad import pack_sequences, pad_input


class MGTEForMaskedLM(MGTEPreTrainedModel):
    """MLM: loss and logits at the masked positions only (labels -100 elsewhere)."""

    def __init__(self, config: MGTEConfig):
        super().__init__(config)
        self.new = MGTEModel(config)
        self.lm_head = MLMHead(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput:
        """With labels: loss = fp32 cross-entropy over masked tokens, logits (n_masked, vocab).

        Without labels: logits for every real token, packed (total, vocab) or padded
        (batch, seqlen, vocab).
        """
        hidden, _, _, unpad = self.new.packed_hidden_states(
            input_ids, attention_mask, token_type_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, position_ids=position_ids
        )
        embeddings = self.new.embeddings.word_embeddings.weight
        if labels is None:
            logits = self.lm_head(hidden, embeddings)  # (total, vocab)
            return MaskedLMOutput(logits=logits if unpad is None else pad_input(logits, *unpad))
        if unpad is not None:
            labels = labels.flatten()[unpad[0]]  # (total,) like the packed tokens
        masked = torch.nonzero(labels != -100).flatten()  # (n_masked,)
        logits = self.lm_head(hidden.index_select(0, masked), embeddings)  # (n_masked, vocab)
        if masked.numel() == 0:
            loss = logits.float().sum() * 0.0  # keeps the graph; every rank runs the same backward
        else:
            loss_sum, _ = mlm_loss_sum(logits, labels.index_select(0, masked))
            loss = loss_sum / masked.numel()
        return MaskedLMOutput(loss=loss, logits=logits)


class MGTEForSequenceClassification(MGTEPreTrainedModel):
    """Cross-encoder reranker on `[CLS] q [SEP] d`: score = W h_CLS (num_labels = 1)."""

    def __init__(self, config: MGTEConfig):
        super().__init__(config)
        self.new = MGTEModel(config, add_pooling_layer=config.classifier_pooler)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = RerankerHead(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput:
        hidden, _, cu_seqlens, _ = self.new.packed_hidden_states(
            input_ids, attention_mask, token_type_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, position_ids=position_ids
        )
        cls = cls_pool(hidden, cu_seqlens)  # (batch, H)
        if self.new.pooler is not None:
            cls = self.new.pooler(cls)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(cls)))  # (batch, num_labels)


@dataclass
class EmbeddingOutput(ModelOutput):
    dense: torch.Tensor | None = None  # (batch, H) [CLS] hidden states, not normalised
    token_weights: torch.Tensor | None = None  # (total,) sparse weight of every packed token
    input_ids: torch.Tensor | None = None  # (total,) packed token ids
    cu_seqlens: torch.Tensor | None = None  # (batch + 1,)


class MGTEForEmbedding(MGTEPreTrainedModel):
    """The TRM: dense [CLS] embedding (Matryoshka: keep the first d dims) + sparse term weights."""

    def __init__(self, config: MGTEConfig):
        super().__init__(config)
        self.new = MGTEModel(config)
        self.classifier = SparseHead(config.hidden_size)  # gte-multilingual-base's name for it
        self.tokenizer = None  # set by model.hf.load_pretrained when the directory has one
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> EmbeddingOutput:
        hidden, ids, cu_seqlens, _ = self.new.packed_hidden_states(
            input_ids, attention_mask, token_type_ids, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, position_ids=position_ids
        )
        return EmbeddingOutput(
            dense=cls_pool(hidden, cu_seqlens), token_weights=self.classifier(hidden), input_ids=ids, cu_seqlens=cu_seqlens
        )

    @torch.no_grad()
    def encode(
        self,
        inputs,
        tokenizer=None,
        *,
        max_length: int = 8192,
        max_tokens: int = 16384,
        dim: int | None = None,
        normalize: bool = True,
        return_sparse: bool = False,
    ) -> dict:
        """Embed texts or token batches; returns {"dense": (n, dim)} (+ "sparse": list[dict]).

        inputs: list[str] (needs a tokenizer), list[list[int]] token ids, or a dict with padded
        `input_ids` and `attention_mask`. Documents are sorted by length and packed into
        batches of at most `max_tokens` tokens; results come back in input order.
        """
        sequences = self._token_lists(inputs, tokenizer, max_length)
        dense: list[torch.Tensor | None] = [None] * len(sequences)
        sparse: list[dict | None] = [None] * len(sequences)
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            for batch in token_budget_batches([len(s) for s in sequences], max_tokens, longest_first=True):
                ids, cu, longest = pack_sequences([sequences[i] for i in batch], device=device)
                out = self(ids, cu_seqlens=cu, max_seqlen=longest)
                vectors = out.dense[:, :dim] if dim else out.dense
                vectors = F.normalize(vectors.float(), dim=-1) if normalize else vectors.float()
                weights = sparse_term_weights(ids, out.token_weights, cu) if return_sparse else None
                for row, i in enumerate(batch):
                    dense[i] = vectors[row].cpu()
                    if return_sparse:
                        sparse[i] = weights[row]
        finally:
            self.train(was_training)
        result = {"dense": torch.stack(dense)}
        if return_sparse:
            result["sparse"] = sparse
        return result

    def _token_lists(self, inputs, tokenizer, max_length: int) -> list[list[int]]:
        if isinstance(inputs, dict):
            ids, mask = torch.as_tensor(inputs["input_ids"]), torch.as_tensor(inputs["attention_mask"]).bool()
            return [row[m].tolist()[:max_length] for row, m in zip(ids, mask)]
        if not inputs:
            raise ValueError("encode needs at least one input")
        if isinstance(inputs[0], str):
            tokenizer = tokenizer or self.tokenizer
            if tokenizer is None:
                raise ValueError("encode(texts) needs a tokenizer: pass tokenizer= or load the model with model.hf.load_pretrained")
            return tokenizer(list(inputs), truncation=True, max_length=max_length)["input_ids"]
        return [list(s)[:max_length] for s in inputs]

