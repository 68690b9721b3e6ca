"""The cached-gradient step gives the full-batch parameter gradient (fp32, dropout on, RNG replayed)."""

import pytest
import torch

from training.contrastive import info_nce
from training.gradcache import RngState, cached_step, full_batch_step


class ToyEncoder(torch.nn.Module):
    """Bag of token embeddings -> MLP with dropout: small, but random like the real encoder."""

    def __init__(self, vocab=50, hidden=32, dropout=0.3):
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(vocab, hidden, mode="mean")
        self.mlp = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
                                       torch.nn.Dropout(dropout), torch.nn.Linear(hidden, hidden))

    def forward(self, ids):  # (n, L) -> (n, H)
        return self.mlp(torch.nn.functional.dropout(self.emb(ids), 0.1, self.training))


def make_batch(n=12, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (n, length), generator=g), torch.randint(0, 50, (n, length), generator=g)


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def run(step, model, chunk, seed=123, **kw):
    queries, docs = make_batch()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = step(model, queries.split(chunk), docs.split(chunk), lambda q, d: info_nce(q, d, 0.05), **kw)
    return loss, grads(model)


@pytest.mark.parametrize("chunk", [1, 4, 5, 12])
def test_cached_gradient_equals_full_batch_gradient(chunk):
    torch.manual_seed(0)
    model = ToyEncoder().train()
    loss_ref, g_ref = run(full_batch_step, model, chunk)
    loss, g = run(lambda *a: cached_step(*a, device="cpu"), model, chunk)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-6)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-5, atol=1e-7, msg=name)


def test_without_rng_replay_dropout_differs_and_gradients_do_not_match():
    """The test above can fail: re-encoding with fresh dropout masks gives another gradient."""
    torch.manual_seed(0)
    model = ToyEncoder().train()
    _, g_ref = run(full_batch_step, model, 4)

    replay = RngState.replay
    RngState.replay = lambda self: __import__("contextlib").nullcontext()
    try:
        _, g = run(lambda *a: cached_step(*a, device="cpu"), model, 4)
    finally:
        RngState.replay = replay
    assert max((g[n] - g_ref[n]).abs().max().item() for n in g) > 1e-3


def test_rng_stream_continues_as_after_one_full_pass():
    model = ToyEncoder().train()
    queries, docs = make_batch()
    torch.manual_seed(7)
    with torch.no_grad():
        for c in [*queries.split(4), *docs.split(4)]:
            model(c)
    expected = torch.rand(3)
    torch.manual_seed(7)
    cached_step(model, queries.split(4), docs.split(4), lambda q, d: info_nce(q, d, 0.05), device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_skip_backward_leaves_no_gradient_and_no_sync_wraps_all_but_the_last_chunk():
    model = ToyEncoder().train()
    queries, docs = make_batch()
    loss = cached_step(model, queries.split(4), docs.split(4), lambda q, d: info_nce(q, d, 0.05) * float("nan"),
                       device="cpu", skip_backward=lambda l: not torch.isfinite(l))
    assert torch.isnan(loss)
    assert all(p.grad is None for p in model.parameters())

    entered = []

    class Ctx:
        def __enter__(self):
            entered.append(1)

        def __exit__(self, *exc):
            return False

    cached_step(model, queries.split(4), docs.split(4), lambda q, d: info_nce(q, d, 0.05), device="cpu",
                no_sync=Ctx)
    assert len(entered) == 3 + 3 - 1  # 6 chunks, the last one synchronises


def test_backward_hook_receives_a_scalar_per_chunk():
    model = ToyEncoder().train()
    queries, docs = make_batch()
    seen = []

    def backward(surrogate):
        assert surrogate.ndim == 0 and surrogate.requires_grad
        seen.append(surrogate.item())
        (surrogate * 2).backward()  # e.g. a loss scaler

    torch.manual_seed(1)
    cached_step(model, queries.split(6), docs.split(6), lambda q, d: info_nce(q, d, 0.05), device="cpu",
                backward=backward)
    scaled = grads(model)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    cached_step(model, queries.split(6), docs.split(6), lambda q, d: info_nce(q, d, 0.05), device="cpu")
    assert len(seen) == 4
    for name, g in grads(model).items():
        torch.testing.assert_close(scaled[name], 2 * g)


def test_full_batch_step_skips_the_backward_when_told_and_counts_texts():
    from training.gradcache import texts_in
    from model.unpad import pack_sequences

    torch.manual_seed(0)
    model = ToyEncoder().train()
    queries, docs = make_batch()
    model.zero_grad(set_to_none=True)
    loss = full_batch_step(model, queries.split(4), docs.split(4), lambda q, d: info_nce(q, d, 0.05),
                           skip_backward=lambda loss: True)
    assert torch.isfinite(loss) and all(p.grad is None for p in model.parameters())
    _, cu, _ = pack_sequences([[1, 2], [3], [4, 5, 6]])
    assert texts_in([{"cu_seqlens": cu}, {"cu_seqlens": cu}]) == 6
