import pytest
import torch

from model import MGTEConfig


@pytest.fixture
def tiny_config():
    """2 layers, hidden 64, 4 heads; small vocabulary so construction is instant."""
    return MGTEConfig.tiny(vocab_size=1000, hidden_dropout_prob=0.0)


@pytest.fixture
def ragged_batch():
    """A padded batch of 3 documents of lengths 9, 5, 2 (right padding) with random ids."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, 1000, (3, 9), generator=g)
    attention_mask = torch.zeros(3, 9, dtype=torch.long)
    for row, length in enumerate((9, 5, 2)):
        attention_mask[row, :length] = 1
    input_ids[:, 0] = 0  # <s>
    input_ids[attention_mask == 0] = 1  # <pad>
    return input_ids, attention_mask
