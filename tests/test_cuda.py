"""What a CUDA GPU changes, checked on one: the model, its loss, decoding, bf16 training with the job's Trainer,
saving and loading, and compiled decoding give on the GPU what they give on a CPU.

Skipped where torch sees no GPU (CI has none); on a machine with one, `pytest tests/test_cuda.py`. The tests run on
`cuda` unless VASWANI_TEST_DEVICE names another device (`VASWANI_TEST_DEVICE=cpu` runs the same checks on a CPU,
which is how they are kept working between GPU sessions). docs/performance.md has the results of the last run."""

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_model
from test_training import CollatorTokenizer, reverse_task, token_budget_trainer
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, Seq2SeqTrainingArguments

from vaswani.modeling import kernels_vaswani
from vaswani.modeling.compat_vaswani import check_cached_decoding
from vaswani.modeling.kernels_vaswani import cross_entropy

DEVICE = os.environ.get("VASWANI_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU here")


@pytest.fixture(autouse=True)
def exact_float32():
    """float32 products in float32 on the GPU (no TF32), so that they can be compared with the CPU's."""
    if not torch.cuda.is_available():
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_forward_loss_and_gradients_match_the_cpu(attn_implementation):
    # train mode without dropout: the training computation, the same on both devices (no random masks)
    cpu = tiny_model(attn_implementation=attn_implementation, dropout=0.0).train()
    gpu = tiny_model(attn_implementation=attn_implementation, dropout=0.0).train().to(DEVICE)
    gpu.load_state_dict(cpu.state_dict())
    input_ids, attention_mask = random_batch(3, 9)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    outputs = {}
    for name, model in (("cpu", cpu), ("gpu", gpu)):
        out = model(input_ids.to(model.device), attention_mask=attention_mask.to(model.device),
                    labels=labels.to(model.device), label_smoothing=0.1)  # fmt: skip
        out.loss.backward()
        outputs[name] = (out.logits.cpu(), out.loss.cpu(), model.model.shared.weight.grad.cpu())
    for cpu_value, gpu_value in zip(outputs["cpu"], outputs["gpu"], strict=True):
        torch.testing.assert_close(gpu_value, cpu_value, rtol=1e-4, atol=1e-5)
    assert outputs["gpu"][2].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_fused_loss_of_half_precision_logits_on_the_gpu(monkeypatch, dtype, label_smoothing):
    """The loss by blocks of rows reads bf16/fp16 logits in their dtype on the GPU too: the float32 loss and
    gradient of torch's cross-entropy (blocks of 4 rows here, the last one partial)."""
    monkeypatch.setattr(kernels_vaswani, "LOSS_BLOCK_LOGITS", 4 * 1000)
    monkeypatch.setattr(kernels_vaswani, "LOSS_BLOCK_LOGITS_ACCELERATOR", 4 * 1000)
    torch.manual_seed(0)
    logits = (3 * torch.randn(2, 11, 1000, device=DEVICE)).to(dtype).requires_grad_()
    labels = torch.randint(0, 1000, (2, 11), device=DEVICE)
    labels[1, 7:] = -100
    loss = cross_entropy(logits, labels, label_smoothing=label_smoothing)
    loss.backward()
    reference_logits = logits.detach().float().requires_grad_()
    reference = F.cross_entropy(reference_logits.view(-1, 1000), labels.view(-1), label_smoothing=label_smoothing)
    reference.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == dtype
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits.grad, reference_logits.grad.to(dtype))


def test_bf16_autocast_attention_runs_in_bf16_on_the_gpu(monkeypatch):
    """The float32 detour for attention is for CPUs (torch's bf16 CPU kernel is the slower one); on a GPU, SDPA
    gets the bf16 inputs autocast gives it (its flash and memory-efficient kernels need them)."""
    seen = []
    original = F.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        seen.append(query.dtype)
        return original(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny_model(attn_implementation="sdpa").train().to(DEVICE)
    input_ids, attention_mask = (t.to(DEVICE) for t in random_batch(3, 7))
    with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
        out = model(input_ids, attention_mask=attention_mask, labels=input_ids)
    out.loss.backward()
    expected = torch.float32 if torch.device(DEVICE).type == "cpu" else torch.bfloat16
    layers = len(model.model.encoder.layers) + 2 * len(model.model.decoder.layers)
    assert seen == [expected] * layers
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_generation_matches_the_cpu():
    cpu = tiny_model(attn_implementation="sdpa")
    gpu = tiny_model(attn_implementation="sdpa").to(DEVICE)
    input_ids, attention_mask = random_batch(3, 9)
    for beams in (1, 4):
        options = dict(num_beams=beams, max_new_tokens=12, do_sample=False)
        expected = cpu.generate(input_ids, attention_mask=attention_mask, **options)
        got = gpu.generate(input_ids.to(DEVICE), attention_mask=attention_mask.to(DEVICE), **options)
        assert torch.equal(got.cpu(), expected), beams
    # The job's guard: cached decoding computes what the uncached model computes, on the GPU too.
    assert check_cached_decoding(gpu, input_ids.to(DEVICE), attention_mask.to(DEVICE)) < 1e-3


def test_the_jobs_bf16_trainer_on_the_gpu(monkeypatch, tmp_path):
    """The main job's Trainer with bf16 on the GPU: the model gets bf16 logits and the smoothing at every step,
    on the GPU, and the reverse task's loss falls."""
    from vaswani.scripts.recipe import TokenBudgetTrainer

    seen = []
    original = kernels_vaswani.FusedCrossEntropy.apply

    def spy(logits, *args):
        seen.append((logits.dtype, logits.device.type, args[3]))  # dtype, device and epsilon
        return original(logits, *args)

    monkeypatch.setattr(kernels_vaswani.FusedCrossEntropy, "apply", spy)
    torch.manual_seed(0)
    model = tiny_model(vocab_size=16, d_model=32)
    collator = DataCollatorForSeq2Seq(CollatorTokenizer(), model=model, label_pad_token_id=-100)
    on_cpu = torch.device(DEVICE).type == "cpu"
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, label_smoothing_factor=0.1, learning_rate=3e-3,
        max_steps=40, logging_steps=10, report_to=[], save_strategy="no", use_cpu=on_cpu, bf16=True,
        disable_tqdm=True, seed=0, optim="adamw_torch_fused",
    )  # fmt: skip
    trainer = TokenBudgetTrainer(model=model, args=args, train_dataset=reverse_task(640, vocab_size=16, seed=0),
                                 data_collator=collator, d_model=32, warmup_steps=10, smoothing_in_model=True)  # fmt: skip
    trainer.train()
    assert seen == [(torch.bfloat16, torch.device(DEVICE).type, 0.1)] * 40
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < losses[0] - 0.2, losses


def test_saved_on_the_gpu_loads_anywhere(tmp_path):
    """save_pretrained from the GPU, from_pretrained onto the CPU and back onto the GPU (device_map, which builds on
    the meta device: the sinusoid table must be rebuilt there), in float32 and in bf16."""
    model = tiny_model(attn_implementation="sdpa").to(DEVICE)
    model.save_pretrained(tmp_path)
    input_ids, attention_mask = random_batch(3, 9)
    decoder_input_ids = input_ids[:, :5]
    expected = model(input_ids.to(DEVICE), attention_mask=attention_mask.to(DEVICE),
                     decoder_input_ids=decoder_input_ids.to(DEVICE)).logits.cpu()  # fmt: skip
    cpu = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(cpu(input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits,
                               expected, rtol=1e-4, atol=1e-5)  # fmt: skip
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.bfloat16, 0.1)):
        loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, device_map=DEVICE, dtype=dtype).eval()
        assert loaded.device.type == torch.device(DEVICE).type and loaded.dtype == dtype
        logits = loaded(input_ids.to(DEVICE), attention_mask=attention_mask.to(DEVICE),
                        decoder_input_ids=decoder_input_ids.to(DEVICE)).logits.float().cpu()  # fmt: skip
        torch.testing.assert_close(logits, expected, rtol=tolerance, atol=tolerance)


def test_compiled_static_cache_decoding_matches_eager():
    """transformers' compiled decoding (a static cache; generate compiles the decoding step, CUDA graphs included)
    gives the eager model's tokens."""
    from transformers import CompileConfig

    model = tiny_model(attn_implementation="sdpa").to(DEVICE)
    input_ids, attention_mask = (t.to(DEVICE) for t in random_batch(3, 9))
    options = dict(num_beams=1, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    eager = model.generate(input_ids, attention_mask=attention_mask, **options)
    config = CompileConfig(fullgraph=True, mode="reduce-overhead" if DEVICE.startswith("cuda") else "default")
    config._compile_all_devices = True  # a no-op on a GPU, where generate compiles by itself
    for _ in range(2):  # the second call replays what the first compiled
        compiled = model.generate(input_ids, attention_mask=attention_mask, cache_implementation="static",
                                  compile_config=config, **options)  # fmt: skip
        assert torch.equal(compiled, eager)


def test_token_batches_train_without_a_cudnn_attention_plan_per_shape(tmp_path):
    """Token-count batches change shape every step; cuDNN's attention (torch's SDPA choice for bf16 on a Hopper GPU)
    builds a plan per shape, 40 ms of CPU a call. TokenBudgetTrainer, given token-count batches, switches it off: bf16
    steps of three shapes, profiled, run no cuDNN attention, and their attention gets its gradient."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        model = tiny_model(attn_implementation="sdpa").train().to(DEVICE)
        data = reverse_task(64, vocab_size=16, seed=0)
        trainer = token_budget_trainer(model, data, tmp_path, use_cpu=torch.device(DEVICE).type == "cpu")
        trainer.get_train_dataloader()
        assert not torch.cuda.is_available() or not torch.backends.cuda.cudnn_sdp_enabled()
        with torch.profiler.profile() as profile:
            for length in (7, 9, 11):
                input_ids, attention_mask = (t.to(DEVICE) for t in random_batch(3, length))
                with torch.autocast(torch.device(DEVICE).type, dtype=torch.bfloat16):
                    loss = model(input_ids, attention_mask=attention_mask, labels=input_ids).loss
                loss.backward()
        names = {event.name for event in profile.events()}
        assert any("scaled_dot_product" in name for name in names)
        assert not any("cudnn_attention" in name for name in names), sorted(n for n in names if "attention" in n)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for n, p in model.named_parameters()
                   if "q_proj" in n)  # fmt: skip
    finally:
        if torch.cuda.is_available():
            torch.backends.cuda.enable_cudnn_sdp(before)
