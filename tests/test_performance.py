"""The speed changes keep the math: oneDNN's linear maps (packed or not, in inference and in training) and the fused
cross-entropy agree with the plain formulas, no way of changing a weight leaves a layer computing with an old copy,
and the benchmark script runs end to end. (Speed itself is measured by scripts/benchmark.py, not here.)"""

import copy
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_model
from torch import nn
from torch.nn.utils import prune

from vaswani.modeling import kernels_vaswani, modeling_vaswani
from vaswani.modeling.compat_vaswani import cache_of
from vaswani.modeling.kernels_vaswani import Linear, cross_entropy, onednn_pays
from vaswani.scripts import benchmark

needs_onednn = pytest.mark.skipif(not kernels_vaswani.ONEDNN_LINEAR, reason="oneDNN's linear op is not available")
needs_packing = pytest.mark.skipif(
    not (kernels_vaswani.ONEDNN_LINEAR and kernels_vaswani.PACKING_AVAILABLE), reason="oneDNN cannot pack weights"
)


def linear_pair(in_features: int = 256, out_features: int = 384, bias: bool = True) -> tuple[nn.Linear, Linear]:
    torch.manual_seed(0)
    plain = nn.Linear(in_features, out_features, bias=bias)
    ours = Linear(in_features, out_features, bias=bias)
    ours.load_state_dict(plain.state_dict())
    return plain, ours


@needs_onednn
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 8, 40, 300])  # decoding's batch x beams, and an encoder's batch x length
def test_linear_equals_nn_linear_in_inference(rows, bias, packed):
    plain, ours = linear_pair(bias=bias)
    x = torch.randn(rows, 1, 256)
    with torch.no_grad():
        assert onednn_pays(x, ours.weight)  # the path under test is the one taken
        torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
        assert ours.packed is None  # never packed behind the user's back
        if packed:
            assert ours.pack() is kernels_vaswani.PACKING_AVAILABLE
        torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
        transposed = torch.randn(256, rows).t()  # a column-major input
        torch.testing.assert_close(ours(transposed), plain(transposed), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_linear_gradients_equal_nn_linear():
    plain, ours = linear_pair()
    x = torch.randn(4, 9, 256, requires_grad=True)
    grad_y = torch.randn(4, 9, 384)
    expected = torch.autograd.grad(plain(x), (x, plain.weight, plain.bias), grad_y)
    got = torch.autograd.grad(ours(x), (x, ours.weight, ours.bias), grad_y)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
    assert ours.packed is None  # training does not pack
    ours.requires_grad_(False)  # frozen layer: only dL/dx
    (grad_x,) = torch.autograd.grad(ours(x), x, grad_y)
    torch.testing.assert_close(grad_x, expected[0], rtol=1e-4, atol=1e-4)


@needs_packing
def test_packed_weight_follows_the_weight():
    plain, ours = linear_pair()
    ours.eval()
    x = torch.randn(8, 256)
    with torch.no_grad():
        assert ours.pack()
        ours(x)
        first = ours.packed[1]
        ours(x)
        assert ours.packed[1] is first  # made once
        ours.weight.mul_(2)  # what an optimizer step does: in place
        torch.testing.assert_close(ours(x), F.linear(x, ours.weight, ours.bias), rtol=1e-5, atol=1e-5)
        ours.load_state_dict(plain.state_dict())
        torch.testing.assert_close(ours(x), plain(x), rtol=1e-5, atol=1e-5)
    for twin in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):  # a packed tensor has no storage
        assert twin.packed is None and ours.packed is not None
        with torch.no_grad():
            torch.testing.assert_close(twin(x), plain(x), rtol=1e-5, atol=1e-5)
    ours.train()
    assert ours.packed is None
    ours.eval()
    ours.pack()
    ours.double()
    assert ours.packed is None
    with torch.no_grad():
        torch.testing.assert_close(ours(x.double()), plain.double()(x.double()))


def test_onednn_is_left_to_autocast_and_to_small_weights():
    x, weight = torch.randn(8, 256), torch.randn(256, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn_pays(x, weight)
        assert Linear(256, 256)(x).dtype == torch.bfloat16  # autocast still applies
    assert not onednn_pays(x[:, :64], weight[:64, :64])  # 64 x 64: oneDNN's fixed cost outweighs the gain
    assert not onednn_pays(x.double(), weight.double())


def counted(function_class, calls: list):
    """`function_class` whose `apply` records each call in `calls`."""

    class Counted(function_class):
        @classmethod
        def apply(cls, *args):
            calls.append(args[1].shape)
            return function_class.apply(*args)

    return Counted


@needs_onednn
def test_training_with_onednn_matches_plain_linear(monkeypatch):
    model = tiny_model(d_model=256, encoder_ffn_dim=256, decoder_ffn_dim=256).train()
    input_ids, attention_mask = random_batch(3, 7)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids)

    def loss_and_gradients():
        torch.manual_seed(1)  # the same dropout masks
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    taken = []
    monkeypatch.setattr(kernels_vaswani, "OneDNNLinearFunction", counted(kernels_vaswani.OneDNNLinearFunction,
                                                                         taken))  # fmt: skip
    loss, grads = loss_and_gradients()
    assert taken  # oneDNN computed the layers
    monkeypatch.setattr(kernels_vaswani, "ONEDNN_LINEAR", False)
    plain_loss, plain_grads = loss_and_gradients()
    torch.testing.assert_close(loss, plain_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == plain_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-3, atol=1e-5, msg=name)


@needs_packing
@pytest.mark.parametrize(("batch_size", "num_beams"), [(2, 1), (1, 4), (4, 4)])  # 2, 4 and 16 rows per step
def test_decoding_with_packed_weights_matches_plain_linear(monkeypatch, batch_size, num_beams):
    model = tiny_model(d_model=256, encoder_ffn_dim=256, decoder_ffn_dim=256)  # weights large enough to qualify
    input_ids, attention_mask = random_batch(batch_size, 7)
    options = dict(num_beams=num_beams, max_new_tokens=6, do_sample=False, output_scores=True,
                   return_dict_in_generate=True)  # fmt: skip
    assert model.pack_weights_for_inference() is model
    fast = model.generate(input_ids, attention_mask=attention_mask, **options)
    decoder_layer = model.model.decoder.layers[0]
    assert decoder_layer.feed_forward.fc1.packed is not None and decoder_layer.self_attn.q_proj.packed is not None
    monkeypatch.setattr(kernels_vaswani, "ONEDNN_LINEAR", False)
    plain = model.generate(input_ids, attention_mask=attention_mask, **options)
    assert torch.equal(fast.sequences, plain.sequences)
    for fast_scores, plain_scores in zip(fast.scores, plain.scores, strict=True):
        torch.testing.assert_close(fast_scores, plain_scores, rtol=1e-4, atol=1e-4)


def test_onednn_can_be_turned_off_by_environment():
    code = "import vaswani.modeling.kernels_vaswani as k; print(k.ONEDNN_LINEAR)"
    environment = {**os.environ, "VASWANI_ONEDNN": "0"}
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False"]


def test_cross_attention_mask_is_built_once_per_generation(monkeypatch):
    model = tiny_model(attn_implementation="sdpa")
    input_ids, attention_mask = random_batch(3, 7)
    built = []
    original = modeling_vaswani.create_bidirectional_mask

    def counting(**kwargs):
        built.append(kwargs.get("encoder_hidden_states") is not None)  # True: a cross-attention mask
        return original(**kwargs)

    monkeypatch.setattr(modeling_vaswani, "create_bidirectional_mask", counting)
    model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=5, min_new_tokens=5)
    assert built.count(True) == 1 and built.count(False) == 1  # not once per step; one encoder mask

    # A cache reused with another source mask gets a new cross-attention mask.
    encoder_outputs = model.get_encoder()(input_ids, attention_mask=attention_mask)
    first = model(input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
                  decoder_input_ids=input_ids[:, :1], use_cache=True)  # fmt: skip
    cache = cache_of(first)
    built.clear()
    other_mask = torch.ones_like(attention_mask)
    step = model(input_ids, attention_mask=other_mask, encoder_outputs=encoder_outputs,
                 decoder_input_ids=input_ids[:, 1:2], cache=cache, use_cache=True)  # fmt: skip
    assert built == [True]
    uncached = model(input_ids, attention_mask=other_mask, encoder_outputs=encoder_outputs,
                     decoder_input_ids=input_ids[:, :2])  # fmt: skip
    torch.testing.assert_close(step.logits[:, -1], uncached.logits[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_logits", [None, 4 * 40])  # one block; blocks of 4 rows, the last one partial
@pytest.mark.parametrize("num_items_in_batch", [None, 9])
def test_fused_cross_entropy_matches_torch(monkeypatch, num_items_in_batch, block_logits):
    if block_logits:
        monkeypatch.setattr(kernels_vaswani, "LOSS_BLOCK_LOGITS", block_logits)
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


def change_weights(model, way: str) -> None:
    """Changes the model's weights the way a user would."""
    fc1 = model.model.decoder.layers[0].feed_forward.fc1
    if way == "optimizer step":
        model.train()
        input_ids, attention_mask = random_batch(2, 6, vocab_size=model.config.vocab_size)
        model(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids).loss.backward()
        torch.optim.SGD(model.parameters(), lr=1.0).step()
        model.eval()
    elif way == "load_state_dict":
        other = tiny_model(seed=1, d_model=256, encoder_ffn_dim=256, decoder_ffn_dim=256)
        model.load_state_dict(other.state_dict())
    elif way == "in-place update":
        with torch.no_grad():
            fc1.weight.mul_(-1)
    elif way == "weight.data write":  # what PEFT's merge_and_unload does: base_layer.weight.data += delta
        fc1.weight.data += torch.randn_like(fc1.weight)
    elif way == "prune":
        prune.l1_unstructured(fc1, "weight", amount=0.5)
    elif way == "resize_token_embeddings":
        model.resize_token_embeddings(160)
    elif way == "tie_weights":  # an output layer replaced, used, then tied again to the embedding
        model.lm_head.weight = nn.Parameter(torch.randn_like(model.lm_head.weight))
        logits(model, *random_batch(2, 7))
        model.tie_weights()
        assert model.lm_head.weight is model.model.shared.weight


WAYS = ["optimizer step", "load_state_dict", "in-place update", "weight.data write", "prune",
        "resize_token_embeddings", "tie_weights"]  # fmt: skip


def logits(model, input_ids, attention_mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :4]).logits


@needs_onednn
@pytest.mark.parametrize("packed", [False, True], ids=["default", "pack_weights_for_inference"])
@pytest.mark.parametrize("way", WAYS)
def test_no_way_of_changing_weights_leaves_a_stale_copy(monkeypatch, way, packed):
    if packed and way == "weight.data write":
        pytest.skip("the documented limit of the explicit step: call train() before writing through .data")
    model = tiny_model(d_model=256, encoder_ffn_dim=256, decoder_ffn_dim=256)  # weights large enough for oneDNN
    input_ids, attention_mask = random_batch(2, 7)
    if packed:
        model.pack_weights_for_inference()
    before = logits(model, input_ids, attention_mask)  # the model has run in inference
    change_weights(model, way)
    after = logits(model, input_ids, attention_mask)
    monkeypatch.setattr(kernels_vaswani, "ONEDNN_LINEAR", False)  # F.linear on the live weights
    expected = logits(model, input_ids, attention_mask)
    if way not in ("resize_token_embeddings", "tie_weights"):  # those two keep the first 128 logits
        assert not torch.allclose(after, before, atol=1e-3), "the change changed nothing"
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4)


@needs_packing
def test_nothing_is_packed_unless_asked():
    model = tiny_model(d_model=256, encoder_ffn_dim=256, decoder_ffn_dim=256)
    input_ids, attention_mask = random_batch(2, 7)
    model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=3)
    layers = [m for m in model.modules() if isinstance(m, Linear)]
    assert all(layer.packed is None for layer in layers)
    model.pack_weights_for_inference()
    large = [layer for layer in layers if layer.weight.numel() >= kernels_vaswani.SMALLEST_WEIGHT]
    assert len(large) == len(layers) - 1  # all but the output layer (128 x 256)
    assert all(layer.packed is not None for layer in large)
    model.train()
    assert all(layer.packed is None for layer in layers)
