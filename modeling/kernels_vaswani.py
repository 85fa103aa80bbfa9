"""The training loss's kernel and a precision rule for attention, kept apart from the model so that
`modeling_vaswani.py` reads as the paper.

`cross_entropy` / `FusedCrossEntropy`: the token cross-entropy with the same values and gradients as
`F.cross_entropy`, and less memory traffic. Plain torch operations, so `torch.compile` traces it.
`in_float32_on_cpu`: SDPA on a CPU computed in float32 when its inputs are bf16 or fp16 (faster there, see below).

The linear maps are plain `nn.Linear`: vaswani 0.2 computed them with oneDNN through a subclass of `nn.Linear`,
which the standard tools do not see (torch's dynamic int8 quantization matches exact types and quantized none of
them), and which paid only on some CPUs; `torch.compile` now does that work (docs/performance.md). Like the model
file, this file is copied flat into every checkpoint and imports only torch.
"""

from collections.abc import Callable

import torch

# ----------------------------------------------------------------------------------------------------------------
# The training loss
# ----------------------------------------------------------------------------------------------------------------
LOSS_BLOCK_LOGITS = 2**19  # logits per block of rows on a CPU: 2 MB in float32, which stays in a core's cache
# On a GPU each block costs a dozen kernel launches, and cache-sized blocks made the loss of a base-size batch (6,144 x
# 37,000) 439 blocks: vaswani trained at 0.43x MarianMT's speed on an H200. There blocks only bound the float32
# temporaries of bf16 logits (256 MB); the main job's batch is one block.
LOSS_BLOCK_LOGITS_ACCELERATOR = 2**26


def row_blocks(rows: int, vocabulary: int, device: torch.device | str = "cpu") -> list[slice]:
    """Slices of whole rows of an (rows, vocabulary) logits matrix on `device`, each about `LOSS_BLOCK_LOGITS`
    logits on a CPU, `LOSS_BLOCK_LOGITS_ACCELERATOR` elsewhere."""
    on_cpu = torch.device(device).type == "cpu"
    step = max(1, (LOSS_BLOCK_LOGITS if on_cpu else LOSS_BLOCK_LOGITS_ACCELERATOR) // vocabulary)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


class FusedCrossEntropy(torch.autograd.Function):
    """Token cross-entropy from logits, summed over non-ignored targets and divided by `divisor`, with label
    smoothing `epsilon` (Section 5.4): the target distribution puts 1 - epsilon on the target and epsilon spread
    uniformly over the vocabulary.

    The same value and gradient as `F.cross_entropy(logits.float(), ..., reduction="sum", label_smoothing=epsilon)
    / divisor` and as Trainer's `LabelSmoother` (to float rounding), with less memory traffic:
    - it keeps no (N, V) log-softmax for the backward pass, only the logits themselves and one log-sum-exp per row;
    - on a CPU it works by blocks of rows that stay in cache (`row_blocks`), where whole-matrix operations would
      each stream the (N, V) logits through memory again: log-sum-exp, the row means, and in the backward pass the
      softmax - smoothed target, written straight into the gradient;
    - bf16 or fp16 logits (autocast) are read in their own dtype and computed in float32 one block at a time, and
      their gradient is written in their dtype: no float32 copy of the whole matrix in either direction.
    Each block computes exactly what the whole matrix would, so the result is the same to the bit. At the main job's
    shape (about 1,200 x 8,000 bf16 logits, with smoothing) forward and backward took 23-30 ms against 36-57 ms for
    the whole-matrix version (docs/performance.md).
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index: int, divisor: torch.Tensor, epsilon: float = 0.0):
        valid = targets != ignore_index  # (N,)
        safe_targets = targets.masked_fill(~valid, 0)
        lse = logits.new_empty(logits.shape[0], dtype=torch.float32)  # (N,) log-sum-exp of each row
        row_mean = torch.zeros_like(lse)  # (N,) mean logit of each row, for the uniform part of the smoothing
        for rows in row_blocks(*logits.shape, logits.device):
            block = logits[rows].float()  # (rows, V); a view in float32, a small copy in bf16
            lse[rows] = torch.logsumexp(block, dim=-1)
            if epsilon:
                row_mean[rows] = block.mean(dim=-1)
        picked = logits.gather(1, safe_targets[:, None]).squeeze(1).float()  # (N,)
        ctx.save_for_backward(logits, lse, safe_targets, valid, divisor)
        ctx.epsilon = epsilon
        # -log p(target) = lse - x_target; the uniform part: -mean_j log p_j = lse - mean_j x_j
        target_term = picked if epsilon == 0 else (1 - epsilon) * picked + epsilon * row_mean
        return ((lse - target_term) * valid).sum() / divisor

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        logits, lse, targets, valid, divisor = ctx.saved_tensors
        epsilon = ctx.epsilon
        scale = valid * (grad_output / divisor)  # (N,); ignored rows get no gradient
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)  # (N, V)
        in_place = logits.dtype == torch.float32
        for rows in row_blocks(*logits.shape, logits.device):
            # softmax - smoothed target, in float32: in the gradient itself, or in a block-sized buffer for bf16
            block = grad[rows] if in_place else torch.empty(grad[rows].shape, device=grad.device)  # (rows, V)
            torch.sub(logits[rows].float(), lse[rows, None], out=block).exp_()  # softmax
            if epsilon:
                block.sub_(epsilon / logits.shape[1])  # minus the uniform part of the smoothed target
            block.scatter_add_(1, targets[rows, None], torch.full_like(lse[rows, None], epsilon - 1.0))  # its target
            block.mul_(scale[rows, None])
            if not in_place:
                grad[rows] = block  # rounded to the logits' dtype
        return grad, None, None, None, None


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None, label_smoothing: float = 0.0):
    """Mean token cross-entropy over labels != -100, or the sum divided by `num_items_in_batch` when Trainer passes
    it (so that gradient accumulation equals one large batch), as transformers' `fixed_cross_entropy`; with
    `label_smoothing` epsilon, the loss against the smoothed target of Section 5.4, as Trainer's `LabelSmoother`.
    Computed in float32 whatever the logits' dtype; the loss is float32."""
    logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    labels = labels.to(logits.device).reshape(-1)  # (N,)
    if num_items_in_batch is None:
        divisor = (labels != -100).sum().clamp(min=1)
    else:
        divisor = torch.as_tensor(num_items_in_batch, device=logits.device)
    return FusedCrossEntropy.apply(logits, labels, -100, divisor.to(torch.float32), label_smoothing)


def label_smoothed_loss(epsilon: float):
    """A `compute_loss_func` for transformers' Trainer: the fused cross-entropy with label smoothing `epsilon`, the
    same loss as Trainer's `label_smoothing_factor` (its `LabelSmoother`) without the (N, V) log-softmax it keeps.
    `Seq2SeqTrainer(..., compute_loss_func=label_smoothed_loss(0.1))`."""

    def compute_loss(outputs, labels, num_items_in_batch=None):
        return cross_entropy(outputs.logits, labels, num_items_in_batch, label_smoothing=epsilon)

    return compute_loss


# ----------------------------------------------------------------------------------------------------------------
# Attention in half precision on a CPU
# ----------------------------------------------------------------------------------------------------------------
def in_float32_on_cpu(attention: Callable, module, query, key, value, attention_mask, **kwargs):
    """Calls `attention`, a member of transformers' attention interface, in float32 where its inputs are bf16 or fp16
    on a CPU (bf16 autocast training, a bf16 model), and gives its output back in the inputs' dtype.

    Why: torch's CPU SDPA kernel (torch 2.13) is slower in bf16 than in float32, most of all its backward pass. At the
    main job's shape (32 x 4 heads x 30 tokens x 64, forward and backward) on an AMD EPYC with AVX-512 BF16 and no
    AMX: 6.2-8.1 ms in bf16, 2.3-4.0 ms cast to float32 and back; in the job's bf16 step it took a fifth of the time
    (docs/performance.md). Float32 is also the more exact of the two, so nothing is given up. Elsewhere (CUDA, float32
    inputs) `attention` runs as it is, and so it does where no gradient will be asked for (decoding, `torch.no_grad`):
    the forward pass alone is as fast in bf16 as in float32 there, and the casts would double its time (decoding
    shapes of the base model, batch 8 x beam 4: 80 us in bf16, 292 us cast to float32 and back; 2026-12-05, an Intel
    Xeon with AMX).
    """
    dtype = query.dtype
    backward = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)
    if query.device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16) or not backward:
        return attention(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()  # additive: 0 or the dtype's minimum; float32's is lower still
    with torch.autocast("cpu", enabled=False):  # else autocast would cast the float32 inputs back to bf16
        output, weights = attention(module, query.float(), key.float(), value.float(), attention_mask, **kwargs)
    return output.to(dtype), None if weights is None else weights.to(dtype)
