"""The speed changes keep the math: the CPU output projection and the fused cross-entropy agree with the plain
formulas, and the benchmark script runs end to end. (Speed itself is measured by scripts/benchmark.py, not here.)"""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model
from torch import nn

from vaswani.modeling.modeling_vaswani import LARGE_VOCABULARY, cross_entropy, project_to_vocabulary
from vaswani.scripts import benchmark


@pytest.mark.parametrize("shape", [(1, 1), (8, 1), (4, 3), (2, 40)])  # decoding rows; the last is > SKINNY_ROWS
def test_output_projection_equals_linear(shape):
    torch.manual_seed(0)
    head = nn.Linear(64, LARGE_VOCABULARY + 7, bias=False)
    hidden = torch.randn(*shape, 64)
    with torch.no_grad():
        logits = project_to_vocabulary(hidden, head)
        expected = head(hidden)
    assert logits.shape == expected.shape and logits.is_contiguous()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_output_projection_keeps_autograd():
    head = nn.Linear(16, LARGE_VOCABULARY, bias=False)
    hidden = torch.randn(1, 1, 16, requires_grad=True)
    project_to_vocabulary(hidden, head).sum().backward()  # the training path: F.linear, with gradients
    assert hidden.grad is not None and head.weight.grad is not None


@pytest.mark.parametrize("num_items_in_batch", [None, 9])
def test_fused_cross_entropy_matches_torch(num_items_in_batch):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 40, requires_grad=True)
    labels = torch.randint(0, 40, (3, 5))
    labels[0, 3:] = -100
    loss = cross_entropy(logits, labels, num_items_in_batch)
    (grad,) = torch.autograd.grad(loss, logits)
    flat_logits, flat_labels = logits.view(-1, 40), labels.view(-1)
    if num_items_in_batch is None:
        reference = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
    else:
        reference = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum") / num_items_in_batch
    (reference_grad,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)
    assert torch.all(grad[0, 3:] == 0)  # ignored positions get no gradient


def test_all_ignored_labels_give_zero_loss_not_nan():
    logits = torch.randn(2, 3, 10, requires_grad=True)
    loss = cross_entropy(logits, torch.full((2, 3), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_model_loss_uses_the_fused_cross_entropy_and_trains():
    model = tiny_model().train()
    ids = torch.randint(4, 128, (4, 6))
    out = model(input_ids=ids, labels=ids)
    reference = F.cross_entropy(out.logits.view(-1, 128), ids.view(-1))
    torch.testing.assert_close(out.loss, reference)


def test_benchmark_script_runs(tmp_path):
    table = benchmark.main(["--sizes", "tiny", "--repeats", "1", "--warmup", "1", "--batch-size", "4",
                            "--source-length", "8", "--target-length", "8", "--new-tokens", "4",
                            "--generation-batch-sizes", "2", "--output", str(tmp_path / "bench.md")])  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for name in ("train tokens/s, fp32", "train MFU, fp32", "train step peak memory, MiB",
                 "greedy new tokens/s, batch 2", "beam-4 new tokens/s, batch 2"):  # fmt: skip
        assert name in rows and rows[name].rstrip(" |").endswith("x"), name
    assert (tmp_path / "bench.md").read_text().strip() == table.strip()


def test_labels_outside_the_vocabulary_are_refused_clearly():
    model = tiny_model()
    ids = torch.randint(4, 128, (2, 5))
    labels = ids.clone()
    labels[1, -1] = 500  # the last position: not covered by the decoder-input check
    with pytest.raises(ValueError, match=r"`labels` contains 500, outside the vocabulary \[0, 128\)"):
        model(input_ids=ids, labels=labels)
