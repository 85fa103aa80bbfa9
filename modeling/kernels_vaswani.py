"""CPU kernels of vaswani, kept apart from the model so that `modeling_vaswani.py` reads as the paper.

- `Linear`: `nn.Linear` with the same parameters and checkpoints, computed by oneDNN where that is faster on x86
  CPUs, with an optional packed copy of the weight for inference (`pack`, explicit only).
- `cross_entropy` / `FusedCrossEntropy`: the training loss with the same values and gradients as
  `F.cross_entropy`, and less memory traffic.

Measurements: docs/performance.md. Like the model file, this file is copied flat into every checkpoint and imports
only torch.
"""

import os

import torch
from torch import nn

# PyTorch's CPU `F.linear` calls MKL's sgemm. oneDNN, which PyTorch also ships (its inner product is the kernel
# behind `torch.ops.mkldnn._linear_pointwise`, the op inductor emits for CPU linear layers), computes the same
# products faster on this project's machine (AMD EPYC, 2 cores; docs/performance.md): for the training shapes (1024
# rows) 1.1-1.3x forward and 1.1-1.4x for the input's gradient; for decoding's few rows, whose weights stream from
# memory at every step, 1.0-2x, and with the weight in oneDNN's own blocked layout ("packed", made once per
# weight) another 1.2-1.7x at 8-64 rows. Below 256 x 256 weights its fixed cost per call (about 11 us) outweighs
# the gain. The weight's gradient stays with `torch.mm`: oneDNN was 0.75-1.37x by shape, and slower in the model.
# oneDNN compiles a kernel per new shape (1-3 ms the first time), so training whose shapes rarely repeat gains
# less: with a new shape at almost every step, base trained 1.18x MarianMT against 1.10x with MKL, small about even.
#
# In the environment, `VASWANI_ONEDNN=0` turns oneDNN off.
#
# Packed copies are never made behind the user's back: a copy is a second version of the weight, and a write
# through `weight.data` (PEFT's merge, pruning, weight surgery) changes neither the weight's data pointer nor its
# version, so no cheap check can tell that the copy is stale. They are made only by an explicit step,
# `model.pack_weights_for_inference()`, for weights that no longer change (as `torch.jit.freeze` does).
SMALLEST_WEIGHT = 256 * 256
PACKING_ROWS = 8  # the rows oneDNN tunes the layout for; at 1-256 rows within 15% of a layout for those rows
ONEDNN_LINEAR = (
    os.environ.get("VASWANI_ONEDNN", "1") != "0"
    and torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")  # x86: where it was measured
)
PACKING_AVAILABLE = hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def onednn_pays(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether to compute x W^T with oneDNN: a CPU float32 product with a weight of at least 256 x 256, outside
    autocast (which picks its own kernels) and `torch.compile` (inductor does the same itself)."""
    return (
        ONEDNN_LINEAR
        and weight.numel() >= SMALLEST_WEIGHT  # the cheapest test first: small models pay it on every call
        and x.dtype == weight.dtype == torch.float32
        and x.device.type == "cpu"
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )


def onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., in) W^T (in, out) + b by oneDNN's inner product; W may be a transposed view or packed."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinearFunction(torch.autograd.Function):
    """y = x W^T + b with oneDNN for y and dL/dx = dL/dy W, and `torch.mm` for dL/dW = (dL/dy)^T x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_y = grad_output.reshape(-1, weight.shape[0])  # (..., out) -> (N, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_product(grad_y, weight.t()).view(x.shape)  # (N, out) (out, in) -> (..., in)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.mm(grad_y.t(), x.reshape(-1, weight.shape[1]))  # (out, N) (N, in) -> (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_y.sum(0)  # (out,)
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same checkpoints), computed by oneDNN where that is faster (`onednn_pays`).

    It computes from `self.weight` at every call, so every way of changing the weight is seen. `pack()` makes a
    packed copy for inference, used while the weight keeps the data pointer and version it was packed from
    (an optimizer step, an in-place update or `load_state_dict` makes it pack again); `train()`, `.to()` and
    copies drop it. A write through `weight.data` is not seen by a packed layer: call `train()` first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed = None  # ((data pointer, version) of the weight it was made from, the packed weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if not onednn_pays(x, weight):
            return nn.functional.linear(x, weight, bias)
        if torch.is_grad_enabled() and (
            x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
        ):
            return OneDNNLinearFunction.apply(x, weight, bias)
        return onednn_product(x, self.packed_weight(), bias)

    def pack(self) -> bool:
        """Makes the packed copy (where oneDNN computes this layer in float32 on this CPU). Returns whether it did."""
        weight = self.weight
        probe = weight.new_empty((PACKING_ROWS, weight.shape[1]))
        if not (PACKING_AVAILABLE and onednn_pays(probe, weight)) or weight.is_inference():
            self.packed = None  # inference tensors carry no version to check
            return False
        made_from = (weight.data_ptr(), weight._version)
        self.packed = (made_from, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKING_ROWS))
        return True

    def packed_weight(self) -> torch.Tensor:
        """The packed copy if this layer was packed, made again if the weight changed in a way torch tracks."""
        if self.packed is None:
            return self.weight
        if self.packed[0] != (self.weight.data_ptr(), self.weight._version):
            self.pack()
        return self.packed[1] if self.packed is not None else self.weight

    def train(self, mode: bool = True):
        if mode:
            self.packed = None  # training changes the weight at every step
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self.packed = None  # `.to()`, `.half()`, ...: the weight is replaced
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__()  # deepcopy and pickle: a packed tensor has no storage to copy
        return {**state, "packed": None}


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
