import pytest
import torch

from model.unpad import (
    cu_seqlens_from_lengths,
    pack_sequences,
    pad_input,
    position_ids_from_cu_seqlens,
    unpad_input,
)


def test_unpad_2x4_exact():
    input_ids = torch.tensor([[10, 11, 12, 1], [20, 21, 1, 1]])
    attention_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    tokens, indices, cu_seqlens, max_seqlen = unpad_input(input_ids, attention_mask)
    assert tokens.tolist() == [10, 11, 12, 20, 21]
    assert indices.tolist() == [0, 1, 2, 4, 5]
    assert cu_seqlens.tolist() == [0, 3, 5]
    assert cu_seqlens.dtype == torch.int32
    assert max_seqlen == 3
    assert position_ids_from_cu_seqlens(cu_seqlens).tolist() == [0, 1, 2, 0, 1]


def test_pad_input_inverts_unpad_and_zeros_pads():
    hidden = torch.randn(2, 4, 3)
    attention_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    packed, indices, _, _ = unpad_input(hidden, attention_mask)
    assert packed.shape == (5, 3)
    back = pad_input(packed, indices, 2, 4)
    assert torch.equal(back[attention_mask.bool()], hidden[attention_mask.bool()])
    assert torch.count_nonzero(back[~attention_mask.bool()]) == 0


def test_pad_input_is_differentiable():
    packed = torch.randn(5, 3, requires_grad=True)
    indices = torch.tensor([0, 1, 2, 4, 5])
    pad_input(packed, indices, 2, 4).sum().backward()
    assert torch.equal(packed.grad, torch.ones(5, 3))


def test_empty_row_is_rejected():
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        unpad_input(torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [0, 0, 0]]))


def test_pack_sequences_and_lengths():
    ids, cu, longest = pack_sequences([[5, 6, 7], [8], [9, 10]])
    assert ids.tolist() == [5, 6, 7, 8, 9, 10]
    assert cu.tolist() == [0, 3, 4, 6] == cu_seqlens_from_lengths([3, 1, 2]).tolist()
    assert longest == 3
    assert position_ids_from_cu_seqlens(cu).tolist() == [0, 1, 2, 0, 0, 1]
    with pytest.raises(ValueError):
        pack_sequences([[1], []])
