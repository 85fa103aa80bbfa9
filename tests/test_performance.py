"""The speed changes keep the math: the fused cross-entropy agrees with the plain formula, the cross-attention mask is
built once per generation, a compiled model never computes with an old copy of a weight, and the benchmark script
runs end to end. (Speed itself is measured by scripts/benchmark.py, not here.)"""

from functools import partial
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_model
from torch import nn
from torch.nn.utils import prune

from vaswani.modeling import kernels_vaswani, modeling_vaswani
from vaswani.modeling.compat_vaswani import cache_of
from vaswani.modeling.kernels_vaswani import cross_entropy, in_float32_on_cpu
from vaswani.scripts import benchmark


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


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("block_logits", [None, 4 * 40])  # one block; blocks of 4 rows, the last one partial
@pytest.mark.parametrize("num_items_in_batch", [None, 9])
def test_fused_cross_entropy_matches_torch(monkeypatch, num_items_in_batch, block_logits, label_smoothing):
    if block_logits:
        monkeypatch.setattr(kernels_vaswani, "LOSS_BLOCK_LOGITS", block_logits)
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 40, requires_grad=True)
    labels = torch.randint(0, 40, (3, 5))
    labels[0, 3:] = -100
    loss = cross_entropy(logits, labels, num_items_in_batch, label_smoothing=label_smoothing)
    (grad,) = torch.autograd.grad(loss, logits)
    flat_logits, flat_labels = logits.view(-1, 40), labels.view(-1)
    smoothing = dict(ignore_index=-100, label_smoothing=label_smoothing)
    if num_items_in_batch is None:
        reference = F.cross_entropy(flat_logits, flat_labels, **smoothing)
    else:
        reference = F.cross_entropy(flat_logits, flat_labels, reduction="sum", **smoothing) / num_items_in_batch
    (reference_grad,) = torch.autograd.grad(reference, logits)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad)
    assert torch.all(grad[0, 3:] == 0)  # ignored positions get no gradient


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_cross_entropy_of_half_precision_logits_is_the_float32_one(monkeypatch, dtype):
    """bf16 autocast gives bf16 logits: the loss reads them by blocks, computes in float32, and gives the same loss
    and gradient, to the bit, as the float32 computation on the upcast logits with its gradient rounded back."""
    monkeypatch.setattr(kernels_vaswani, "LOSS_BLOCK_LOGITS", 4 * 40)  # blocks of 4 rows, the last one partial
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 5, 40)).to(dtype).requires_grad_()
    labels = torch.randint(0, 40, (3, 5))
    labels[1, 2:] = -100
    loss = cross_entropy(logits, labels, label_smoothing=0.1)
    (grad,) = torch.autograd.grad(loss, logits)
    upcast = logits.detach().float().requires_grad_()
    reference = F.cross_entropy(upcast.view(-1, 40), labels.view(-1), ignore_index=-100, label_smoothing=0.1)
    (reference_grad,) = torch.autograd.grad(reference, upcast)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(grad, reference_grad.to(dtype))
    monkeypatch.setattr(kernels_vaswani, "LOSS_BLOCK_LOGITS", 10**9)  # one block: the same result to the bit
    whole = cross_entropy(logits, labels, label_smoothing=0.1)
    assert torch.equal(loss, whole) and torch.equal(grad, torch.autograd.grad(whole, logits)[0])


def test_label_smoothed_loss_is_trainers_label_smoother():
    """`label_smoothed_loss`, a compute_loss_func, gives the loss and gradient of Seq2SeqTrainer's
    label_smoothing_factor."""
    from transformers.trainer_pt_utils import LabelSmoother

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 30, requires_grad=True)
    labels = torch.randint(0, 30, (2, 6))
    labels[1, 4:] = -100
    outputs = SimpleNamespace(logits=logits)
    for num_items_in_batch in (None, torch.tensor(7)):
        ours = kernels_vaswani.label_smoothed_loss(0.1)(outputs, labels, num_items_in_batch=num_items_in_batch)
        trainers = LabelSmoother(epsilon=0.1)({"logits": logits}, labels, num_items_in_batch=num_items_in_batch)
        torch.testing.assert_close(ours, trainers)
        torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(trainers, logits)[0])


def test_model_computes_the_label_smoothed_loss_of_trainers_label_smoother():
    """forward(labels=..., label_smoothing=0.1) gives the loss and gradient Trainer's label_smoothing_factor computes
    from the logits; a value that is no probability share is refused before any work."""
    from transformers.trainer_pt_utils import LabelSmoother

    model = tiny_model().eval()  # no dropout: the same logits in every call
    torch.manual_seed(0)
    input_ids, attention_mask = random_batch(3, 7)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    out = model(input_ids, attention_mask=attention_mask, labels=labels, label_smoothing=0.1)
    trainers = LabelSmoother(epsilon=0.1)({"logits": out.logits}, labels)
    torch.testing.assert_close(out.loss, trainers)
    weight = model.lm_head.weight
    torch.testing.assert_close(torch.autograd.grad(out.loss, weight, retain_graph=True)[0],
                               torch.autograd.grad(trainers, weight)[0])  # fmt: skip
    plain = model(input_ids, attention_mask=attention_mask, labels=labels)  # the default: no smoothing
    torch.testing.assert_close(plain.loss, F.cross_entropy(out.logits.view(-1, 128), labels.view(-1)))
    assert not torch.isclose(plain.loss, out.loss)
    for bad in (1.0, -0.1, "0.1", True):
        with pytest.raises(ValueError, match="label_smoothing"):
            model(input_ids, attention_mask=attention_mask, labels=labels, label_smoothing=bad)


def test_bf16_trainer_job_loss_reads_bf16_logits_in_the_model(monkeypatch, tmp_path):
    """The main job's trainer under bf16 on a CPU: the model computes the label-smoothed loss from its bf16 logits
    (Trainer would get them copied to float32 by accelerate), and trains to the same loss as Trainer's own
    label_smoothing_factor path."""
    from test_training import CollatorTokenizer, reverse_task
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    from vaswani.scripts.recipe import TokenBudgetTrainer

    seen = []
    original = kernels_vaswani.FusedCrossEntropy.apply

    def spy(logits, *args):
        seen.append((logits.dtype, args[3]))  # dtype and epsilon
        return original(logits, *args)

    monkeypatch.setattr(kernels_vaswani.FusedCrossEntropy, "apply", spy)
    data = reverse_task(32, vocab_size=16, seed=0)
    losses = {}
    for ours in (True, False):
        torch.manual_seed(0)
        model = tiny_model(vocab_size=16, d_model=32)
        collator = DataCollatorForSeq2Seq(CollatorTokenizer(), model=model, label_pad_token_id=-100)
        args = Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / str(ours)), per_device_train_batch_size=8, label_smoothing_factor=0.1,
            max_steps=3, report_to=[], save_strategy="no", use_cpu=True, bf16=True, disable_tqdm=True, seed=0,
        )  # fmt: skip
        extra = dict(d_model=32, warmup_steps=2, smoothing_in_model=True) if ours else {}
        trainer = (TokenBudgetTrainer if ours else Seq2SeqTrainer)(
            model=model, args=args, train_dataset=data, data_collator=collator, **extra)  # fmt: skip
        trainer.train()
        losses[ours] = trainer.state.log_history[-1]["train_loss"]
        if ours:
            assert seen == [(torch.bfloat16, 0.1)] * 3  # every step's loss from bf16 logits, smoothed
    assert losses[True] == pytest.approx(losses[False], rel=0.05)


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


def test_half_precision_sdpa_on_a_cpu_computes_in_float32(monkeypatch):
    """bf16 autocast training on a CPU: every SDPA call gets float32 inputs with autocast off (torch's bf16 CPU kernel
    is the slower one), the rest of the step stays in bf16, and the gradients reach the attention weights."""
    seen = []
    original = F.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        seen.append((query.dtype, key.dtype, value.dtype, torch.is_autocast_enabled("cpu")))
        return original(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny_model(attn_implementation="sdpa").train()
    input_ids, attention_mask = random_batch(3, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids, attention_mask=attention_mask, labels=input_ids)
    assert out.logits.dtype == torch.bfloat16  # the output projection still runs in bf16
    out.loss.backward()
    layers = len(model.model.encoder.layers) + 2 * len(model.model.decoder.layers)
    assert seen == [(torch.float32,) * 3 + (False,)] * layers
    grads = [p.grad for name, p in model.named_parameters() if "q_proj" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 and torch.isfinite(g).all() for g in grads)


def test_in_float32_on_cpu_gives_float32_attention_in_the_inputs_dtype():
    calls = []

    def attention(module, query, key, value, attention_mask, **kwargs):
        calls.append((query.dtype, attention_mask.dtype, torch.is_autocast_enabled("cpu"), kwargs))
        output = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=kwargs["scaling"])
        return output.transpose(1, 2), None  # (B, T, h, d_k)

    q, k, v = (torch.randn(2, 4, 5, 8, generator=torch.Generator().manual_seed(i)).bfloat16().requires_grad_()
               for i in range(3))  # fmt: skip
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.bfloat16)
    mask[0, ..., -2:] = torch.finfo(torch.bfloat16).min  # the first row's last two keys are padding
    wrapped = partial(in_float32_on_cpu, attention)  # as the model calls it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, weights = wrapped(None, q, k, v, mask, scaling=0.5)
    assert calls == [(torch.float32, torch.float32, False, {"scaling": 0.5})] and weights is None
    expected = attention(None, q.float(), k.float(), v.float(), mask.float(), scaling=0.5)[0]
    assert output.dtype == torch.bfloat16 and torch.equal(output, expected.bfloat16())
    output.float().sum().backward()  # the gradient reaches the bf16 inputs through the casts
    assert q.grad.dtype == torch.bfloat16 and q.grad.abs().sum() > 0
    # float32 inputs go through untouched
    calls.clear()
    output32, _ = wrapped(None, q.float(), k.float(), v.float(), mask.float(), scaling=0.5)
    assert torch.equal(output32, expected) and calls[0][:2] == (torch.float32, torch.float32)
    # Without a gradient to compute (decoding), bf16's forward pass is as fast as float32's: no casts.
    calls.clear()
    with torch.no_grad():
        output16, _ = wrapped(None, q, k, v, mask, scaling=0.5)
    assert calls[0][:2] == (torch.bfloat16, torch.bfloat16) and output16.dtype == torch.bfloat16
    torch.testing.assert_close(output16.float(), expected.detach(), atol=3e-2, rtol=3e-2)


def test_benchmark_script_runs(tmp_path):
    table = benchmark.main(["--sizes", "tiny", "--repeats", "1", "--warmup", "1", "--batch-size", "4",
                            "--source-length", "8", "--target-length", "8", "--new-tokens", "4",
                            "--generation-batch-sizes", "1", "--inference-paths", "--profile-decoding",
                            "--output", str(tmp_path / "bench.md")])  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    for name in ("train tokens/s, fp32", "train MFU, fp32", "train step peak memory, MiB",
                 "greedy new tokens/s, batch 1", "beam-4 new tokens/s, batch 1"):  # fmt: skip
        assert name in rows and rows[name].rstrip(" |").endswith("x"), name
    threads = "1 thread" if torch.get_num_threads() == 1 else f"{torch.get_num_threads()} threads"
    for decoding in ("greedy", "beam-4"):
        for path in ("eager (fp32)", "torch.compile, static cache", "bf16 weights", "int8 (quantize_dynamic)",
                     f"CTranslate2 float32, {threads}", f"CTranslate2 int8, {threads}",
                     f"ONNX Runtime float32, {threads}", f"ONNX Runtime int8, {threads}", "ONNX Runtime int8, 1 thread"):  # fmt: skip
            assert rows[f"tiny, batch 1, {decoding}: {path}"].rstrip(" |").endswith("x"), path
        # the profile: vaswani and MarianMT, shares of generate's time that add up to the whole
        profile = [line for line in table.splitlines() if line.startswith(f"| tiny, batch 1, {decoding} |")]
        assert [line.split("|")[2].strip() for line in profile] == ["vaswani", "MarianMT", "vaswani, ONNX Runtime float32"]
        assert f"tiny, batch 1, {decoding}: ONNX Runtime's sessions take" in table
        for line in profile:
            cells = [cell.strip() for cell in line.strip(" |").split("|")]
            shares = [int(cell.rstrip("%")) for cell in cells[3:]]
            assert float(cells[2]) > 0 and shares[0] > 0 and abs(sum(shares) - 100) <= len(shares)
    assert "Streaming bandwidth measured here" in table
    assert "tiny, batch 1, greedy: the fastest generate() path is" in table and "of the weight-streaming bound" in table
    assert (tmp_path / "bench.md").read_text().strip() == table.strip()


def test_benchmark_script_times_the_decoder_only_and_encoder_only_models_against_gpt2_and_bert():
    table = benchmark.main(["--sizes", "tiny", "--repeats", "1", "--warmup", "1", "--batch-size", "4",
                            "--source-length", "8", "--target-length", "8", "--new-tokens", "4",
                            "--generation-batch-sizes", "1", "8", "--sequence-length", "16", "--prompt-length", "4",
                            "--model-families"])  # fmt: skip
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "train tokens/s, fp32" in rows  # the translation rows stay
    assert "| | vaswani | peer | vaswani / peer |" in table
    assert "causal LM: VaswaniForCausalLM against GPT2LMHeadModel" in table
    assert "masked LM: VaswaniForMaskedLM against BertForMaskedLM" in table
    for name in ("causal LM train tokens/s, fp32", "causal LM greedy new tokens/s, batch 1",
                 "causal LM greedy new tokens/s, batch 8", "masked LM train tokens/s, fp32"):  # fmt: skip
        cells = [cell.strip() for cell in rows[name].strip(" |").split("|")]
        ours, peer = (float(cell.split()[0].replace(",", "")) for cell in cells[1:3])
        assert ours > 0 and peer > 0 and cells[3].endswith("x"), name
    assert "causal LM train step peak memory, MiB" in rows and "masked LM train step peak memory, MiB" in rows
    # one option value: that family only; without the option, no second table
    only = benchmark.main(["--sizes", "tiny", "--repeats", "1", "--warmup", "0", "--batch-size", "2",
                           "--source-length", "4", "--target-length", "4", "--sequence-length", "8",
                           "--skip-generation", "--model-families", "masked-lm"])  # fmt: skip
    assert "masked LM train tokens/s, fp32" in only and "causal LM" not in only
    assert "| | vaswani | peer |" not in benchmark.main(["--sizes", "tiny", "--repeats", "1", "--warmup", "0",
                                                        "--batch-size", "2", "--source-length", "4",
                                                        "--target-length", "4", "--skip-generation"])  # fmt: skip


def test_a_decoding_step_reads_the_decoder_weights_but_the_cross_attention_keys_and_values():
    model = tiny_model()
    config = model.config
    d, ff, V = config.d_model, config.decoder_ffn_dim, config.vocab_size
    per_layer = 6 * d * d + 2 * d * ff  # self q/k/v/out, cross q/out, feed-forward
    vectors = 6 * d + ff + d + 3 * 2 * d  # their biases and three LayerNorms
    assert benchmark.decoding_step_bytes(model, 2) == config.decoder_layers * (2 * per_layer + 4 * vectors) + 2 * V * d


def test_the_step_clock_puts_everything_back():
    from transformers.generation import LogitsProcessorList

    model = tiny_model()
    input_ids, attention_mask = random_batch(2, 5)
    before = LogitsProcessorList.__call__
    with benchmark.StepClock(model) as clock:
        model.generate(input_ids, attention_mask=attention_mask, num_beams=2, max_new_tokens=3)
    assert clock.seconds["decoder forward"] > 0 and clock.seconds["beam cache reorder"] > 0
    assert "forward" not in model.__dict__ and LogitsProcessorList.__call__ is before


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
        model.zero_grad(set_to_none=True)
        model.eval()
    elif way == "load_state_dict":
        other = tiny_model(seed=1, d_model=model.config.d_model, encoder_ffn_dim=model.config.encoder_ffn_dim,
                           decoder_ffn_dim=model.config.decoder_ffn_dim, vocab_size=model.config.vocab_size)  # fmt: skip
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


def test_a_compiled_model_follows_every_way_of_changing_weights():
    """torch.compile (the inference path that replaced vaswani 0.2's packed weights) must read the live weights: after
    each change, the compiled model computes what the eager one computes. Whether weights are graph inputs or
    baked-in constants is decided by dynamo's capture and guards, which every backend shares; `aot_eager` skips
    inductor's code generation (inductor itself runs in tests/test_serving.py). Four ways write into the same
    tensors, one replaces a parameter (pruning and resizing replace them too, and cost a recompilation each)."""
    model = tiny_model(d_model=64, encoder_ffn_dim=64, decoder_ffn_dim=64)
    compiled = torch.compile(model, backend="aot_eager")
    input_ids, attention_mask = random_batch(2, 7)
    for way in ["optimizer step", "load_state_dict", "in-place update", "weight.data write", "tie_weights"]:
        before = logits(compiled, input_ids, attention_mask)  # the model has run, compiled, in inference
        change_weights(model, way)
        after = logits(compiled, input_ids, attention_mask)
        if way not in ("resize_token_embeddings", "tie_weights"):  # those two keep the first 128 logits
            assert not torch.allclose(after, before, atol=1e-3), f"{way}: the change changed nothing"
        torch.testing.assert_close(after, logits(model, input_ids, attention_mask), rtol=1e-4, atol=1e-4, msg=way)
