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

Used by ``transformer.compute_loss`` in every precision. Under autocast or with low-precision (bf16/fp16)
weights the matmuls run in that dtype (the autocast dtype, else the weight's) while the log-softmax,
the loss and the accumulation of W's gradient over blocks stay in float32, the same precision split
the generic path gets from autocast plus its ``float()`` upcast of the logits; the block's logits are
cast once into the float32 workspace and its gradient cast back into the low-precision one, so no
[tokens, vocab] tensor is ever kept for backward. Gradients come back in the dtypes of ``h`` and ``W``.

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
    """Two reusable [rows, V] buffers, grown when a call needs more.

    ``logits``: in the matmul dtype (also holds the block's gradient cast for the backward matmuls when that
    dtype is low precision); ``logp``: float32 log-probabilities (the same dtype as ``logits`` in float32).
    """

    def __init__(self) -> None:
        self.logits: torch.Tensor | None = None
        self.logp: torch.Tensor | None = None

    def get(self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        buf = self.logits
        if buf is None or buf.shape[0] < rows or buf.shape[1] != vocab or buf.dtype != dtype or buf.device != device:
            buf = self.logits = self.logp = None  # free the old pair before allocating the new one
            self.logits = torch.empty(rows, vocab, dtype=dtype, device=device)
            self.logp = torch.empty(rows, vocab, dtype=torch.float32, device=device)
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
        grad_enabled: bool, link: TiedGradient | None, dtype: torch.dtype,
    ) -> torch.Tensor:
        """Mean loss over rows of ``h`` [N, D], every one with a target in ``targets`` [N] (no -100 here).

        ``dtype``: the matmuls' dtype; log-softmax, loss and W's gradient accumulation are float32.
        """
        N, V = h.shape[0], weight.shape[0]
        rows = min(N, max(MIN_ROWS, WORKSPACE_ELEMENTS // V))
        logits_buf, logp_buf = workspace.get(rows, V, dtype, h.device)
        low = dtype != torch.float32
        hc, wc = h.to(dtype), weight.to(dtype)  # no copies in float32; one [V, D] cast under autocast
        target = targets.unsqueeze(1)
        # needs_input_grad ignores no_grad (forward always runs without grad mode), hence grad_enabled
        need_h, need_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hc) if need_h else None
        grad_w: torch.Tensor | None = None
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, N, rows):
            end = min(start + rows, N)
            hb, tb = hc[start:end], target[start:end]
            logits = torch.mm(hb, wc.t(), out=logits_buf[: end - start])
            # float32 log-softmax (the upcast the generic path does with .float()), into reused memory
            logp = torch.log_softmax(logits, dim=1, dtype=torch.float32, out=logp_buf[: end - start])
            loss -= logp.gather(1, tb).sum()
            if not (need_h or need_w):
                continue
            grad = logp.exp_()  # softmax ...
            grad.scatter_add_(1, tb, torch.full(tb.shape, -1.0, dtype=grad.dtype, device=grad.device))  # ... - one-hot
            if low:
                grad = logits.copy_(grad)  # the logits are spent: their buffer takes the low-precision gradient
            # the mean's 1/N goes into the small [rows, D] operands, never into the [rows, V] matrix
            if grad_h is not None:
                torch.mm(grad, wc, out=grad_h[start:end]).div_(N)
            if need_w:
                block = torch.mm(grad.t(), hb / N)
                if grad_w is None:
                    grad_w = block.float() if low else block
                else:
                    grad_w.add_(block)  # float32 accumulation over blocks
        loss /= N
        # kept on ctx (not save_for_backward) so backward can hand them over without a copy
        ctx.grads = (
            grad_h.to(h.dtype) if grad_h is not None else None,
            grad_w.to(weight.dtype) if grad_w is not None else None,
        )
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
        return grad_h, grad_w, None, None, None, None, None


def matmul_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's when it is on for the weight's device, else the weight's."""
    device_type = weight.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


@torch.compiler.disable  # a graph break: dynamo cannot trace the autograd function's reused workspace
def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, workspace: Workspace, link: TiedGradient | None = None
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of ``h @ weight.T`` against ``labels`` (-100 = not counted), and the counted tokens.

    ``h`` [..., D], ``weight`` [V, D], ``labels`` [...] (already shifted). Same value and gradients as
    :func:`foundry_core.models.generation.next_token_loss` on the logits (in float32; within low-precision
    rounding under autocast or bf16 weights, see the module docstring); the loss is float32; a batch without any target
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
    dtype = matmul_dtype(weight)
    with torch.autocast(weight.device.type, enabled=False):  # the casts above are explicit
        loss = _LinearCrossEntropy.apply(h2, weight, flat, workspace, torch.is_grad_enabled(), link, dtype)
    return loss, n
