import pytest
import torch
import torch.nn.functional as F

from model import (
    MGTEForEmbedding,
    MGTEForMaskedLM,
    MGTEForSequenceClassification,
    batch_vocab,
    cls_pool,
    sparse_term_matrix,
    sparse_term_weights,
)
from model.heads import SparseHead
from model.unpad import pack_sequences, unpad_input


def test_cls_pool_takes_each_documents_first_token():
    hidden = torch.arange(12.0).view(6, 2)
    cu = torch.tensor([0, 3, 4, 6], dtype=torch.int32)
    assert cls_pool(hidden, cu).tolist() == [[0.0, 1.0], [6.0, 7.0], [8.0, 9.0]]


def test_cls_pool_padded_right_and_left_equals_packed():
    # three documents of lengths 3, 1, 2: packed (6, H) and padded (3, 3, H) both ways
    packed = torch.arange(12.0).view(6, 2)
    cu = torch.tensor([0, 3, 4, 6])
    want = cls_pool(packed, cu)
    right = torch.zeros(3, 3, 2)
    left = torch.zeros(3, 3, 2)
    right_mask = torch.zeros(3, 3, dtype=torch.long)
    left_mask = torch.zeros(3, 3, dtype=torch.long)
    for d in range(3):
        doc = packed[cu[d]:cu[d + 1]]
        n = doc.shape[0]
        right[d, :n], right_mask[d, :n] = doc, 1
        left[d, 3 - n:], left_mask[d, 3 - n:] = doc, 1
    assert torch.equal(cls_pool(right), want) and torch.equal(cls_pool(right, attention_mask=right_mask), want)
    assert torch.equal(cls_pool(left, attention_mask=left_mask), want)
    assert not torch.equal(cls_pool(left), want)  # without the mask, left padding would pool a pad
    with pytest.raises(ValueError, match="need cu_seqlens"):
        cls_pool(packed)


def test_mlm_logits_only_at_masked_positions_equal_full_logits_gathered(tiny_config, ragged_batch):
    torch.manual_seed(0)
    m = MGTEForMaskedLM(tiny_config).eval()
    input_ids, attention_mask = ragged_batch
    ids, indices, cu, longest = unpad_input(input_ids, attention_mask)
    labels = torch.full_like(ids, -100)
    masked = torch.tensor([1, 4, 9, 14])
    labels[masked] = ids[masked]
    with torch.no_grad():
        full = m(ids, cu_seqlens=cu, max_seqlen=longest).logits  # (total, vocab)
        out = m(ids, cu_seqlens=cu, max_seqlen=longest, labels=labels)
    assert full.shape == (ids.numel(), tiny_config.vocab_size)
    assert out.logits.shape == (masked.numel(), tiny_config.vocab_size)
    torch.testing.assert_close(out.logits, full[masked], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, F.cross_entropy(full[masked], ids[masked]), atol=1e-5, rtol=1e-5)
    # the padded form gives the same loss
    padded_labels = torch.full_like(input_ids, -100)
    padded_labels.view(-1)[indices[masked]] = ids[masked]
    with torch.no_grad():
        padded = m(input_ids, attention_mask, labels=padded_labels)
    torch.testing.assert_close(padded.loss, out.loss)
    # decoder is tied to the word embeddings: no separate weight, and gradients reach them
    assert not any(n.startswith("lm_head.decoder") for n, _ in m.named_parameters())
    m.train()
    m(ids, cu_seqlens=cu, labels=labels).loss.backward()
    assert m.new.embeddings.word_embeddings.weight.grad[ids[masked]].abs().sum() > 0


def test_mlm_without_masked_tokens_gives_zero_loss_with_graph(tiny_config):
    m = MGTEForMaskedLM(tiny_config)
    ids, cu, _ = pack_sequences([[0, 5, 6, 2]])
    out = m(ids, cu_seqlens=cu, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0 and out.loss.requires_grad


def test_sparse_term_weights_keep_max_over_repeats_and_drop_specials():
    ids = torch.tensor([0, 7, 9, 7, 2, 0, 9, 9, 3, 2])
    weights = torch.tensor([5.0, 0.2, 0.5, 0.8, 4.0, 6.0, 0.1, 0.0, 0.3, 1.0])
    cu = torch.tensor([0, 5, 10], dtype=torch.int32)
    assert sparse_term_weights(ids, weights, cu) == [{7: pytest.approx(0.8), 9: 0.5}, {9: pytest.approx(0.1)}]
    vocab = batch_vocab(ids)
    matrix = sparse_term_matrix(ids, weights, cu, vocab)
    assert matrix.shape == (2, vocab.numel())
    col = {int(t): i for i, t in enumerate(vocab)}
    assert matrix[0, col[7]] == pytest.approx(0.8) and matrix[0, col[9]] == 0.5
    assert matrix[1, col[9]] == pytest.approx(0.1)
    assert matrix[:, col[0]].sum() == 0 and matrix[:, col[2]].sum() == 0 and matrix[:, col[3]].sum() == 0
    # s_sparse(doc0, doc1) = sum over shared tokens of w0 * w1 = 0.5 * 0.1
    assert (matrix[0] @ matrix[1]).item() == pytest.approx(0.05)


def test_sparse_term_matrix_gradient_goes_to_the_max_occurrence():
    ids = torch.tensor([7, 7, 9])
    weights = torch.tensor([0.2, 0.8, 0.5], requires_grad=True)
    cu = torch.tensor([0, 3], dtype=torch.int32)
    sparse_term_matrix(ids, weights, cu, batch_vocab(ids)).sum().backward()
    assert weights.grad.tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="vocab"):
        sparse_term_matrix(ids, weights, cu, torch.tensor([7]))


def test_sparse_head_is_relu_of_a_linear():
    head = SparseHead(4)
    h = torch.randn(6, 4)
    assert torch.equal(head(h), F.relu(h @ head.weight[0] + head.bias))
    assert set(dict(head.named_parameters())) == {"weight", "bias"}


def test_reranker_score_is_linear_in_cls_hidden(tiny_config, ragged_batch):
    torch.manual_seed(0)
    assert tiny_config.num_labels == 1  # one score per pair by default
    m = MGTEForSequenceClassification(tiny_config).eval()
    with torch.no_grad():
        scores = m(*ragged_batch).logits
        cls = m.new(*ragged_batch).last_hidden_state[:, 0]
    assert scores.shape == (3, 1)
    torch.testing.assert_close(scores, cls @ m.classifier.weight.T + m.classifier.bias)


def test_embedder_encode_matches_forward_in_input_order(tiny_config):
    torch.manual_seed(0)
    m = MGTEForEmbedding(tiny_config).eval()
    seqs = [[0, 5, 6, 2], [0, 7, 8, 9, 10, 11, 2], [0, 12, 2]]
    with torch.no_grad():
        ids, cu, _ = pack_sequences(seqs)
        out = m(ids, cu_seqlens=cu)
    enc = m.encode(seqs, dim=32, return_sparse=True, max_tokens=8)  # forces several batches
    torch.testing.assert_close(enc["dense"], F.normalize(out.dense[:, :32], dim=-1), atol=1e-5, rtol=1e-5)
    expected = sparse_term_weights(ids, out.token_weights, cu)
    assert [d.keys() for d in enc["sparse"]] == [d.keys() for d in expected]
    for got, want in zip(enc["sparse"], expected):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    padded = m.encode({"input_ids": [[0, 12, 2, 1], [0, 5, 6, 2]], "attention_mask": [[1, 1, 1, 0], [1, 1, 1, 1]]}, normalize=False)
    torch.testing.assert_close(padded["dense"], out.dense[[2, 0]], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tokenizer"):
        m.encode(["a text"])


def test_mlm_loss_sum_is_fp32_cross_entropy_whatever_the_logits_dtype():
    from model.heads import mlm_loss_sum

    torch.manual_seed(0)
    logits = (torch.randn(9, 50) * 30).half()  # large logits: fp16 softmax math would lose precision
    labels = torch.randint(0, 50, (9,))
    loss, correct = mlm_loss_sum(logits, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.float(), labels, reduction="sum"))
    assert int(correct) == int((logits.float().argmax(-1) == labels).sum())
