"""Output head and next-token cross-entropy in one step, without the [tokens, vocab] logits ever living in autograd.

The generic path (``F.cross_entropy(h @ W.T, labels)``) allocates a fresh [N, V] tensor four times per step
(logits, log-probabilities, the one-hot gradient, the logits' gradient) and keeps the logits alive until
backward. Here the logits of a block of rows are written into a reused workspace, turned into
log-probabilities in a second one, and the gradient of that block (softmax - one-hot) is formed in place
and multiplied into the gradients of ``h`` and ``W`` right away; backward only hands those over. On a
CPU this saves the page faults of the fresh buffers (each new 32+ MB tensor is fresh memory from the
kernel) and three passes over [N, V]; everywhere it bounds the head's memory to the workspace. Rows
without a target (prompts, image tokens, padding) are dropped before the head, and the mean's 1/n is
folded into the small [N, D] operands, never into the big matrix.

Used by ``transformer.compute_loss`` when the head runs in float32 without autocast (the plain CPU and
fp32 GPU case); under autocast or low-precision weights the model keeps the generic path, whose
``float()`` upcast of the logits this module would otherwise have to copy.

Test: ``uv run pytest packages/foundry-core/tests/test_linear_cross_entropy.py``.
"""

from __future__ import annotations

from typing import Any

import torch

from foundry_core.errors import DataError
from foundry_core.models.generation import check_token_ids

#: Elements of one workspace buffer (two are used): 2**24 float32 = 64 MB, but never fewer than 256 rows,
#: so that accumulating W's gradient block by block stays compute bound.
WORKSPACE_ELEMENTS = 1 << 24
MIN_ROWS = 256


class Workspace:
    """Two reusable [rows, V] buffers (logits, log-probabilities), grown when a call needs more."""

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None
        self.logp: torch.Tensor | None = None

    def get(self, rows: int, like: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
        buf = self.logits
        if buf is None or buf.shape[0] < rows or buf.shape[1] != vocab or buf.dtype != like.dtype or buf.device != like.device:
            buf = self.logits = self.logp = None  # free the old pair before allocating the new one
            self.logits = torch.empty(rows, vocab, dtype=like.dtype, device=like.device)
            self.logp = torch.empty_like(self.logits)
        assert self.logits is not None and self.logp is not None
        return self.logits[:rows], self.logp[:rows]

    def __deepcopy__(self, memo: dict[int, Any]) -> Workspace:
        return Workspace()  # scratch memory: a copied model starts with its own, empty one


class TiedGradient:
    """Hands the head's weight gradient to the input embedding's backward of the same step (tied weights).

    With tied weights the table's gradient is the head's [V, D] gradient plus the embedding's scattered
    rows. Autograd would build the second one as a fresh zero-filled [V, D] tensor and add it; instead
    :func:`tied_embedding`'s backward adds its rows into the head's gradient in place. Autograd runs
    the weight's accumulation only after both uses have delivered (a node waits for all its inputs), and
    the head's backward always runs before the embedding's (the embedding needs the trunk's gradient),
    so the sum is complete when it is used. Without a head gradient (e.g. the head was not in the loss)
    the embedding falls back to the dense gradient.
    """

    def __init__(self) -> None:
        self.grad_w: torch.Tensor | None = None


class _TiedEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, link: TiedGradient) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(ids)
        ctx.link, ctx.weight_shape = link, weight.shape
        return torch.nn.functional.embedding(ids, weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (ids,) = ctx.saved_tensors
        rows, flat_ids = grad_out.reshape(-1, grad_out.shape[-1]), ids.reshape(-1)
        grad_w, ctx.link.grad_w = ctx.link.grad_w, None  # dropped here: autograd then holds the only reference
        if grad_w is not None:
            grad_w.index_add_(0, flat_ids, rows)
            return None, None, None
        return None, grad_out.new_zeros(ctx.weight_shape).index_add_(0, flat_ids, rows), None


def tied_embedding(ids: torch.Tensor, weight: torch.Tensor, link: TiedGradient) -> torch.Tensor:
    """``F.embedding(ids, weight)`` whose weight gradient is added into the tied head's (see :class:`TiedGradient`)."""
    return _TiedEmbedding.apply(ids, weight, link)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, workspace: Workspace,
        grad_enabled: bool, link: TiedGradient | None,
    ) -> torch.Tensor:
        """Mean loss over rows of ``h`` [N, D], every one with a target in ``targets`` [N] (no -100 here)."""
        N, V = h.shape[0], weight.shape[0]
        rows = min(N, max(MIN_ROWS, WORKSPACE_ELEMENTS // V))
        logits_buf, logp_buf = workspace.get(rows, h, V)
        target = targets.unsqueeze(1)
        # needs_input_grad ignores no_grad (forward always runs without grad mode), hence grad_enabled
        need_h, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(h) if need_h else None
        grad_w: torch.Tensor | None = None
        loss = h.new_zeros(())
        for start in range(0, N, rows):
            end = min(start + rows, N)
            hb, tb = h[start:end], target[start:end]
            logits = torch.mm(hb, weight.t(), out=logits_buf[: end - start])
            logp = torch.log_softmax(logits, dim=1, out=logp_buf[: end - start])
            loss -= logp.gather(1, tb).sum()
            if not (need_h or need_w):
                continue
            grad = logp.exp_()  # softmax ...
            grad.scatter_add_(1, tb, torch.full(tb.shape, -1.0, dtype=grad.dtype, device=grad.device))  # ... - one-hot
            # the mean's 1/N goes into the small [rows, D] operands, never into the [rows, V] matrix
            if grad_h is not None:
                torch.mm(grad, weight, out=grad_h[start:end]).div_(N)
            if need_w:
                hs = hb / N
                grad_w = torch.mm(grad.t(), hs) if grad_w is None else grad_w.addmm_(grad.t(), hs)
        loss /= N
        # kept on ctx (not save_for_backward) so backward can hand them over without a copy
        ctx.grads = (grad_h, grad_w)
        ctx.link = link
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        if not hasattr(ctx, "grads"):
            raise RuntimeError("the fused head + loss supports one backward per forward (no retain_graph reuse)")
        grad_h, grad_w = ctx.grads
        del ctx.grads  # the returned tensors are then only referenced by autograd, which adopts them as .grad
        if grad_h is not None:
            grad_h.mul_(grad_loss)
        if grad_w is not None:
            grad_w.mul_(grad_loss)
            if ctx.link is not None:
                ctx.link.grad_w = grad_w  # the tied embedding's backward (later) adds its rows in place
        return grad_h, grad_w, None, None, None, None


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, workspace: Workspace, link: TiedGradient | None = None
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of ``h @ weight.T`` against ``labels`` (-100 = not counted), and the counted tokens.

    ``h`` [..., D], ``weight`` [V, D], ``labels`` [...] (already shifted). Same value and gradients as
    :func:`foundry_core.models.generation.next_token_loss` on the logits; a batch without any target
    yields a zero loss that still has (zero) gradients. ``link``: the :class:`TiedGradient` the input
    embedding of the same forward was looked up with, when ``weight`` is also the embedding table.
    """
    h2, flat = h.reshape(-1, h.shape[-1]), labels.reshape(-1)
    if flat.shape[0] != h2.shape[0]:
        raise DataError(f"labels: {tuple(labels.shape)} does not match the hidden states' {tuple(h.shape[:-1])}")
    counted = flat != -100
    check_token_ids(flat[counted], weight.shape[0], "labels")
    n = int(counted.sum())
    if n == 0:
        return (h2 @ weight.t()).sum() * 0.0, 0
    if n < flat.shape[0]:
        # rows without a target (prompts, image tokens, padding) never reach the head: only the counted
        # rows are multiplied (index_select's backward scatters their gradient back)
        rows = counted.nonzero().squeeze(1)
        h2, flat = h2.index_select(0, rows), flat.index_select(0, rows)
    return _LinearCrossEntropy.apply(h2, weight, flat, workspace, torch.is_grad_enabled(), link), n
