"""The training loss's kernel, kept apart from the model so that `modeling_vaswani.py` reads as the paper.

`cross_entropy` / `FusedCrossEntropy`: the token cross-entropy with the same values and gradients as
`F.cross_entropy`, and less memory traffic. Plain torch operations, so `torch.compile` traces it.

The linear maps are plain `nn.Linear`: vaswani 0.2 computed them with oneDNN through a subclass of `nn.Linear`,
which the standard tools do not see (torch's dynamic int8 quantization matches exact types and quantized none of
them), and which paid only on some CPUs; `torch.compile` now does that work (docs/performance.md). Like the model
file, this file is copied flat into every checkpoint and imports only torch.
"""

import torch

# ----------------------------------------------------------------------------------------------------------------
# The training loss
# ----------------------------------------------------------------------------------------------------------------
LOSS_BLOCK_LOGITS = 64 * 37000  # 9 MB of float32 logits per block: 64 rows of the base vocabulary


class FusedCrossEntropy(torch.autograd.Function):
    """Token cross-entropy from logits, summed over non-ignored targets and divided by `divisor`.

    The same value and gradient as `F.cross_entropy(..., reduction="sum") / divisor` (to float rounding), with less
    memory traffic: it keeps no (N, V) log-softmax for the backward pass (only the log-sum-exp per row, computed
    by blocks of rows), and the backward pass writes softmax - one_hot into one fresh (N, V) buffer, where
    log_softmax + nll_loss allocate and zero-fill several. With a 37k vocabulary that is most of the loss's cost in
    a training step on a CPU.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, divisor: torch.Tensor):
        valid = targets != ignore_index  # (N,)
        safe_targets = targets.masked_fill(~valid, 0)
        # torch.logsumexp makes an (N, V) temporary; by blocks of rows it stays small and in cache (2.4x faster)
        rows = max(1, LOSS_BLOCK_LOGITS // logits.shape[1])
        lse = torch.cat([torch.logsumexp(block, dim=-1) for block in logits.split(rows)])  # (N,)
        picked = logits.gather(1, safe_targets[:, None]).squeeze(1)  # (N,)
        ctx.save_for_backward(logits, lse, safe_targets, valid, divisor)
        return ((lse - picked) * valid).sum() / divisor

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        logits, lse, targets, valid, divisor = ctx.saved_tensors
        grad = torch.sub(logits, lse[:, None]).exp_()  # softmax, (N, V)
        grad.scatter_add_(1, targets[:, None], torch.full_like(lse[:, None], -1.0))  # minus the one-hot target
        grad.mul_((valid * (grad_output / divisor))[:, None].to(grad.dtype))  # ignored rows get no gradient
        return grad, None, None, None


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Mean token cross-entropy over labels != -100, or the sum divided by `num_items_in_batch` when Trainer passes
    it (so that gradient accumulation equals one large batch), as transformers' `fixed_cross_entropy`."""
    logits = logits.float().reshape(-1, logits.shape[-1])  # (N, V); a no-op in fp32
    labels = labels.to(logits.device).reshape(-1)  # (N,)
    if num_items_in_batch is None:
        divisor = (labels != -100).sum().clamp(min=1)
    else:
        divisor = torch.as_tensor(num_items_in_batch, device=logits.device)
    return FusedCrossEntropy.apply(logits, labels, -100, divisor.to(logits.dtype))
