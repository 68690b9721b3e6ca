"""A cached-gradient contrastive step (GradCache, Gao et al. 2021): batch size independent of memory.

The contrastive loss needs every embedding of the batch at once, but the encoder's activations
are only needed chunk by chunk. So:

1. embed every chunk without a graph, recording the RNG state before each chunk;
2. compute the loss on the (detached) embeddings and its gradient w.r.t. them;
3. re-encode each chunk with a graph, replaying its recorded RNG state (the same dropout masks
   as in pass 1), and backpropagate the cached embedding gradient through it.

The parameter gradient equals that of one full-batch backward through the same chunk forwards;
peak activation memory is one chunk's. Step 3 backpropagates the scalar ``(emb * grad).sum()``,
so any engine that takes a loss (GradScaler, DDP, DeepSpeed) can run it through ``backward``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch


@dataclass
class RngState:
    """The CPU RNG state and, on CUDA, the device's RNG state at one point in time."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device | str) -> RngState:
        device = torch.device(device)
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    @contextlib.contextmanager
    def replay(self):
        """Run the body from this state; the RNG state outside is left as it was."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


def _plain_backward(surrogate: torch.Tensor) -> None:
    surrogate.backward()


def cached_step(encode: Callable[[object], torch.Tensor], query_chunks: Sequence, doc_chunks: Sequence,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, device: torch.device | str,
                backward: Callable[[torch.Tensor], None] = _plain_backward,
                no_sync: Callable[[], ContextManager] | None = None,
                skip_backward: Callable[[torch.Tensor], bool] | None = None) -> torch.Tensor:
    """One contrastive step with cached embedding gradients; returns the (detached) loss.

    ``encode(chunk) -> (n, H)`` embeds one chunk (it runs twice per chunk, under the same RNG
    state). ``loss_fn(q, d)`` maps all query and document embeddings, in chunk order, to a scalar.
    ``backward(surrogate)`` backpropagates a scalar (e.g. ``scaler.scale(s).backward()`` or
    ``engine.backward(s)``). ``no_sync()`` wraps every chunk but the last (DDP's ``model.no_sync``),
    so gradients are reduced across ranks once. ``skip_backward(loss)`` -> True ends the step
    after the loss (e.g. a non-finite loss that the loop will skip): no parameter gradient.
    """
    chunks = [*query_chunks, *doc_chunks]
    states, embs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState.capture(device))
            embs.append(encode(chunk).detach())
    q = torch.cat(embs[:len(query_chunks)]).requires_grad_()  # (Nq, H) leaves: their grads get cached
    d = torch.cat(embs[len(query_chunks):]).requires_grad_()  # (Nd, H)
    loss = loss_fn(q, d)
    if skip_backward is not None and skip_backward(loss.detach()):
        return loss.detach()
    q_grad, d_grad = torch.autograd.grad(loss, [q, d])
    grads = [*q_grad.split([e.shape[0] for e in embs[:len(query_chunks)]]),
             *d_grad.split([e.shape[0] for e in embs[len(query_chunks):]])]
    for i, (chunk, state, grad) in enumerate(zip(chunks, states, grads)):
        last = i == len(chunks) - 1
        with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
            with state.replay():
                emb = encode(chunk)  # (n, H), same dropout as in pass 1
            backward((emb.float() * grad.float()).sum())
    return loss.detach()  # the RNG stream continues from the end of pass 1, as after one full pass


def full_batch_step(encode: Callable[[object], torch.Tensor], query_chunks: Sequence, doc_chunks: Sequence,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    backward: Callable[[torch.Tensor], None] = _plain_backward,
                    skip_backward: Callable[[torch.Tensor], bool] | None = None) -> torch.Tensor:
    """The same chunk forwards in one graph and one backward: memory grows with the batch, time is
    one forward less than :func:`cached_step` (the step to take when the whole batch fits in memory)."""
    embs = [encode(chunk) for chunk in [*query_chunks, *doc_chunks]]
    loss = loss_fn(torch.cat(embs[:len(query_chunks)]), torch.cat(embs[len(query_chunks):]))
    if skip_backward is not None and skip_backward(loss.detach()):
        return loss.detach()
    backward(loss)
    return loss.detach()


def texts_in(chunks: Sequence[dict]) -> int:
    """Texts in packed chunks (``cu_seqlens`` has one more entry than its chunk has texts)."""
    return sum(int(c["cu_seqlens"].numel()) - 1 for c in chunks)
