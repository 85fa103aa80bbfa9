"""Side-by-side speed and memory: vaswani against transformers' MarianMTModel with the identical architecture.

python -m vaswani.scripts.benchmark                         # tiny, small, base; fp32; about 5 minutes on 2 CPU cores
python -m vaswani.scripts.benchmark --sizes base --bf16     # adds the bf16-autocast training row
python -m vaswani.scripts.benchmark --output benchmark.md   # also writes the table to a file
python -m vaswani.scripts.benchmark --sizes small base --skip-generation --profile-decoding --inference-paths
                                                            # where a decoding step's time goes, and every serving path
python -m vaswani.scripts.benchmark --sizes small --model-families
                                                            # adds the decoder-only and encoder-only models' table

Both models run in this one process, on the same inputs and thread count, alternating repetition by repetition so
that both see the same machine state; the table gives medians (and the spread, min-max) after warm-up. MarianMT is
built from vaswani's config by the exact exporter (`to_marian`): same d_model, layers, heads, d_ff, ReLU, scaled
and shared embeddings, tied output, sdpa attention, and the same weights, so that both generate the same tokens.

Figures: training throughput, (source + target) tokens per second of forward + backward + AdamW step; the peak
memory a training step allocates on top of the weights and optimizer state (CPU: torch's allocations as the
profiler records them; CUDA: the allocator's peak); new tokens per second for greedy and beam-4 decoding at
a fixed output length (no end-of-sequence token); the machine's fp32 (and bf16) matrix-multiply rate measured here, and each training figure
as a fraction of it (model FLOPs utilisation, from the analytic FLOP count of the step).
With --profile-decoding, the share of generate's time in the model's forward against the rest of generate; with
--inference-paths, greedy and beam-4 decoding through compile, bf16, int8, ONNX Runtime (float32 and int8, behind the
same generate()) and CTranslate2, and batch-1 decoding
against the bound that the machine's streaming bandwidth sets (every weight of the decoder is read once a step).
With --model-families, a second table: vaswani's decoder-only model (VaswaniForCausalLM) against GPT2LMHeadModel and
its encoder-only one (VaswaniForMaskedLM) against BertForMaskedLM, each pair of identical size (width, layers, heads,
feed-forward width, vocabulary, dropout; the peer otherwise as it is: learned positions, pre-LN GPT-2, GELU), in
training tokens per second and, for the causal LM, greedy decoding's new tokens per second.
"""

import argparse
import copy
import functools
import gc
import itertools
import logging
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

import vaswani

logger = logging.getLogger("vaswani.benchmark")

SIZES = {  # preset and vocabulary: the paper's base with its 37k BPE; small with the main job's 8k; tiny as in tests
    "tiny": ("tiny", 128),
    "small": ("small", 8000),
    "base": ("base", 37000),
}


@dataclass
class Timing:
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, units: float) -> tuple[float, float, float]:
        """units per second: median, and the range over repetitions."""
        return units / self.median, units / max(self.seconds), units / min(self.seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batch-size", type=int, default=32, help="training batch (sentences)")
    p.add_argument("--source-length", type=int, default=32)
    p.add_argument("--target-length", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32, help="fixed generated length")
    p.add_argument("--generation-batch-sizes", type=int, nargs="+", default=[8, 1])
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per measurement (medians reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--bf16", action="store_true", help="also time training under bf16 autocast")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--attn-implementation", default="sdpa", help="for both models: sdpa, eager, flash_attention_2")
    p.add_argument("--skip-generation", action="store_true")
    p.add_argument("--inference-paths", action="store_true",
                   help="also time greedy and beam-4 decoding through torch.compile (static cache), bf16 weights, "
                   "int8 dynamic quantization and CTranslate2 (float32 and int8), for both models where the tool "
                   "takes them, and batch-1 decoding against the machine's weight-streaming bound")  # fmt: skip
    p.add_argument(
        "--profile-decoding",
        action="store_true",
        help="also report where a decoding step's time goes (forward, encoder, generate's own work)",
    )
    p.add_argument("--model-families", nargs="*", choices=list(FAMILIES), metavar="FAMILY",
                   help="also time vaswani's other shapes against the transformers model of the same size: causal-lm "
                   "(VaswaniForCausalLM against GPT2LMHeadModel: training, greedy decoding), masked-lm "
                   "(VaswaniForMaskedLM against BertForMaskedLM: training); no value: both")  # fmt: skip
    p.add_argument("--sequence-length", type=int, default=64,
                   help="--model-families training: tokens per sequence (default: as the translation rows' source "
                   "plus target)")  # fmt: skip
    p.add_argument("--prompt-length", type=int, default=8, help="--model-families causal-LM decoding: prompt tokens")
    p.add_argument("--output", type=Path, help="also write the markdown table here")
    return p.parse_args(argv)


# ---- the two models -------------------------------------------------------------------------------------------------


def build_pair(size: str, device: str, attn: str):
    preset, vocab = SIZES[size]
    torch.manual_seed(0)
    config = vaswani.VaswaniConfig.from_preset(preset, vocab_size=vocab, max_position_embeddings=512)
    ours = vaswani.VaswaniForConditionalGeneration._from_config(config, attn_implementation=attn)
    marian = ours.to_marian()  # identical architecture and weights
    marian.config._attn_implementation = attn
    for model in (ours, marian):
        model.to(device)
        # No end-of-sequence token: every sequence runs to the fixed length, without an extra logits processor.
        model.generation_config.update(num_beams=1, length_penalty=1.0, max_length=None, eos_token_id=None,
                                       forced_eos_token_id=None)  # fmt: skip
    return ours, marian


def training_flops(config, batch: int, source: int, target: int) -> float:
    """Analytic FLOPs of one training step (forward x 3): every matmul, attention scores and values included."""
    d, ff = config.d_model, config.encoder_ffn_dim
    S, T = batch * source, batch * target
    encoder = config.encoder_layers * (S * 2 * (4 * d * d + 2 * d * ff) + S * 2 * 2 * source * d)
    decoder = config.decoder_layers * (
        T * 2 * (4 * d * d + 2 * d * d + 2 * d * ff)  # self q/k/v/o, cross q/o, feed-forward
        + S * 2 * 2 * d * d  # cross-attention keys and values of the source
        + T * 2 * 2 * target * d  # self-attention scores and values
        + T * 2 * 2 * source * d  # cross-attention scores and values
    )
    head = T * 2 * d * config.vocab_size
    return 3 * (encoder + decoder + head)


def random_batch(config, batch: int, source: int, target: int, device: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, config.vocab_size, (batch, source), generator=g)
    labels = torch.randint(4, config.vocab_size, (batch, target), generator=g)
    attention_mask = torch.ones_like(input_ids)
    for row in range(0, batch, 4):  # a quarter of the rows padded, as in real batches
        cut = source - 1 - row % (source // 2)
        input_ids[row, cut:], attention_mask[row, cut:] = config.pad_token_id, 0
        labels[row, target - 1 - row % (target // 2) :] = -100
    return {k: v.to(device) for k, v in dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels).items()}


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- memory -------------------------------------------------------------------------------------------------------


def peak_step_memory(step, device: str) -> int:
    """Bytes a training step allocates at its peak, above what exists before it: the CUDA allocator's peak, or on
    a CPU the running sum of torch's allocations and frees recorded by the profiler (the resident-set size would
    hide allocations that the C allocator serves from memory freed by earlier steps)."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    usage = peak = 0
    for event in sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        usage += event.self_cpu_memory_usage
        peak = max(peak, usage)
    return peak


# ---- measurements -------------------------------------------------------------------------------------------------


def time_training(models, batch, args, autocast_dtype=None) -> tuple[list[Timing], list[int | None]]:
    """Training steps of each model on `batch` (`model(**batch).loss`, backward, an AdamW step), alternating model by
    model within each repetition; the timings and each step's peak memory."""
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in models]
    autocast = (
        (lambda: torch.autocast(args.device.split(":")[0], dtype=autocast_dtype)) if autocast_dtype else nullcontext
    )

    def step(model, optimizer):
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for model in models:
        model.train()
    for _ in range(args.warmup):
        for model, optimizer in zip(models, optimizers, strict=True):
            step(model, optimizer)
    timings = [Timing([]) for _ in models]
    for _ in range(args.repeats):
        for model, optimizer, timing in zip(models, optimizers, timings, strict=True):
            synchronize(args.device)
            start = time.perf_counter()
            step(model, optimizer)
            synchronize(args.device)
            timing.seconds.append(time.perf_counter() - start)
    peaks = [
        peak_step_memory(functools.partial(step, m, o), args.device) for m, o in zip(models, optimizers, strict=True)
    ]
    return timings, peaks


def time_alternating(calls, args, warmup: int) -> list[Timing]:
    """Times each call `args.repeats` times after `warmup` runs, alternating call by call within each repetition so
    that all of them see the same machine state."""
    for _ in range(warmup):
        for call in calls:
            call()
    timings = [Timing([]) for _ in calls]
    for _ in range(args.repeats):
        for call, timing in zip(calls, timings, strict=True):
            synchronize(args.device)
            start = time.perf_counter()
            call()
            synchronize(args.device)
            timing.seconds.append(time.perf_counter() - start)
    return timings


def generation_inputs(config, batch_size: int, args) -> dict:
    inputs = random_batch(config, batch_size, args.source_length, 2, args.device, seed=1)
    inputs.pop("labels")
    return inputs


@torch.no_grad()
def time_generation(models, config, batch_size: int, num_beams: int, args) -> list[Timing]:
    inputs = generation_inputs(config, batch_size, args)
    options = dict(num_beams=num_beams, max_new_tokens=args.new_tokens, do_sample=False)
    for model in models:
        model.eval()
    calls = [functools.partial(model.generate, **inputs, **options) for model in models]
    return time_alternating(calls, args, warmup=max(1, args.warmup - 1))


def matmul_rates(dtype: torch.dtype, device: str, n: int = 1024, repeats: int = 30) -> dict[str, float]:
    """FLOP/s of an n x n x n matrix multiply by `torch.matmul`, the best of `repeats` (the attainable peak)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    products = {"torch.matmul": lambda: a @ b}
    rates = {}
    for name, product in products.items():
        for _ in range(3):
            product()
        best = float("inf")
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            product()
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        rates[name] = 2 * n**3 / best
    return rates


def describe_rates(dtype_name: str, rates: dict[str, float]) -> str:
    return f"{dtype_name} " + " / ".join(f"{rate / 1e9:,.1f} GFLOP/s ({name})" for name, rate in rates.items())


# ---- report ---------------------------------------------------------------------------------------------------------


def fmt_rate(rate: tuple[float, float, float]) -> str:
    median, low, high = rate
    return f"{median:,.0f} ({low:,.0f}-{high:,.0f})"


def row(name: str, ours: str, marian: str, ratio: float | None) -> str:
    return f"| {name} | {ours} | {marian} | {'' if ratio is None else f'{ratio:.2f}x'} |"


def benchmark_size(size: str, args, rates: dict) -> list[str]:
    models = build_pair(size, args.device, args.attn_implementation)
    config = models[0].config
    params = models[0].num_parameters()
    rows = [f"| **{size}** ({config.d_model}/{config.encoder_layers}+{config.decoder_layers}/"
            f"{config.encoder_attention_heads}/{config.encoder_ffn_dim}, vocab {config.vocab_size}, "
            f"{params / 1e6:.1f}M parameters) | | | |"]  # fmt: skip
    batch = random_batch(config, args.batch_size, args.source_length, args.target_length, args.device)
    tokens = args.batch_size * (args.source_length + args.target_length)
    flops = training_flops(config, args.batch_size, args.source_length, args.target_length)
    precisions = [("fp32", None, torch.float32)] + (
        [("bf16 autocast", torch.bfloat16, torch.bfloat16)] if args.bf16 else []
    )
    for label, autocast_dtype, rate_dtype in precisions:
        logger.info("%s: training, %s", size, label)
        timings, peaks = time_training(models, batch, args, autocast_dtype)
        ours, marian = (t.rate(tokens) for t in timings)
        rows.append(row(f"train tokens/s, {label}", fmt_rate(ours), fmt_rate(marian), ours[0] / marian[0]))
        mfu = [flops / t.median / rates[rate_dtype] for t in timings]
        rows.append(row(f"train MFU, {label}", f"{mfu[0]:.0%}", f"{mfu[1]:.0%}", mfu[0] / mfu[1]))
        if label == "fp32":
            mib = [p / 2**20 for p in peaks]
            rows.append(row("train step peak memory, MiB", f"{mib[0]:,.1f}", f"{mib[1]:,.1f}", mib[0] / mib[1]))
    if not args.skip_generation:
        for batch_size in args.generation_batch_sizes:
            for name, beams in (("greedy", 1), ("beam-4", 4)):
                logger.info("%s: %s decoding, batch %d", size, name, batch_size)
                timings = time_generation(models, config, batch_size, beams, args)
                ours, marian = (t.rate(batch_size * args.new_tokens) for t in timings)
                rows.append(row(f"{name} new tokens/s, batch {batch_size}", fmt_rate(ours), fmt_rate(marian),
                                ours[0] / marian[0]))  # fmt: skip
    del models
    gc.collect()
    return rows


# ---- the decoder-only and encoder-only models against GPT-2 and BERT -----------------------------------------------

FAMILIES = {  # --model-families: row label, vaswani's class, the peer's (transformers) class
    "causal-lm": ("causal LM", "VaswaniForCausalLM", "GPT2LMHeadModel"),
    "masked-lm": ("masked LM", "VaswaniForMaskedLM", "BertForMaskedLM"),
}
MASKED_SHARE = 0.15  # masked LM: the share of positions with a label (BERT's), the rest -100


def build_family_pair(family: str, size: str, device: str, attn: str):
    """vaswani's `family` model and its peer, of the same size: the peer's config made by the training scripts'
    own helpers (`gpt2_config_like`, `bert_config_like`), so that the benchmark times the pairs those jobs compare.
    Different architectures: fresh weights each, from the same seed."""
    import transformers

    from vaswani.scripts.train_classifier import bert_config_like
    from vaswani.scripts.train_language_model import gpt2_config_like

    preset, vocab = SIZES[size]
    config = vaswani.VaswaniConfig.from_preset(preset, vocab_size=vocab, max_position_embeddings=512)
    if family == "causal-lm":
        peer_config = gpt2_config_like(config)
    else:
        peer_config = bert_config_like(config, SimpleNamespace(pad_token_id=config.pad_token_id))
    _, ours_name, peer_name = FAMILIES[family]
    models = []
    for model_class, model_config in ((getattr(vaswani, ours_name), config),
                                      (getattr(transformers, peer_name), peer_config)):  # fmt: skip
        torch.manual_seed(0)
        model = model_class._from_config(model_config, attn_implementation=attn).to(device)
        if family == "causal-lm":  # as build_pair: every sequence runs to the fixed length
            model.generation_config.update(num_beams=1, max_length=None, eos_token_id=None, forced_eos_token_id=None)
        models.append(model)
    return models


def family_batch(family: str, vocab_size: int, batch: int, length: int, device: str, seed: int = 0) -> dict:
    """Random ids, unpadded; causal LM: labels = the inputs (shifted inside either model); masked LM: labels = the
    inputs at `MASKED_SHARE` of the positions, -100 at the rest."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, vocab_size, (batch, length), generator=g)
    labels = input_ids.clone()
    if family == "masked-lm":
        labels[torch.rand(batch, length, generator=g) >= MASKED_SHARE] = -100
    inputs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    return {k: v.to(device) for k, v in inputs.items()}


def benchmark_family(family: str, size: str, args) -> list[str]:
    """The rows of one family at one size: training tokens/s (fp32, and bf16 autocast with --bf16), the training
    step's peak memory and, for the causal LM, greedy decoding's new tokens/s at each generation batch size; vaswani
    and the peer alternating."""
    label, ours_name, peer_name = FAMILIES[family]
    models = build_family_pair(family, size, args.device, args.attn_implementation)
    config = models[0].config
    params = [m.num_parameters() for m in models]
    stack = "decoder" if family == "causal-lm" else "encoder"  # the config fields of the one stack
    shape = "/".join(str(getattr(config, f"{stack}_{field}")) for field in ("layers", "attention_heads", "ffn_dim"))
    rows = [f"| **{size}** {label} ({config.d_model}/{shape}, vocab {config.vocab_size}): {ours_name} "
            f"{params[0]:,} parameters, {peer_name} {params[1]:,} | | | |"]  # fmt: skip
    batch = family_batch(family, config.vocab_size, args.batch_size, args.sequence_length, args.device)
    tokens = args.batch_size * args.sequence_length
    precisions = [("fp32", None)] + ([("bf16 autocast", torch.bfloat16)] if args.bf16 else [])
    for precision, autocast_dtype in precisions:
        logger.info("%s: %s training, %s", size, label, precision)
        timings, peaks = time_training(models, batch, args, autocast_dtype)
        ours, peer = (t.rate(tokens) for t in timings)
        rows.append(row(f"{label} train tokens/s, {precision}", fmt_rate(ours), fmt_rate(peer), ours[0] / peer[0]))
        if precision == "fp32":
            mib = [p / 2**20 for p in peaks]
            rows.append(row(f"{label} train step peak memory, MiB", f"{mib[0]:,.1f}", f"{mib[1]:,.1f}",
                            mib[0] / mib[1]))  # fmt: skip
    if family == "causal-lm" and not args.skip_generation:
        for model in models:
            model.eval()
        for batch_size in args.generation_batch_sizes:
            logger.info("%s: %s greedy decoding, batch %d", size, label, batch_size)
            prompt = family_batch(family, config.vocab_size, batch_size, args.prompt_length, args.device, seed=1)
            prompt.pop("labels")
            options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
            with torch.no_grad():
                timings = time_decoding(models, prompt, options, args, warmup=max(1, args.warmup - 1))
            ours, peer = (t.rate(batch_size * args.new_tokens) for t in timings)
            rows.append(row(f"{label} greedy new tokens/s, batch {batch_size}", fmt_rate(ours), fmt_rate(peer),
                            ours[0] / peer[0]))  # fmt: skip
    del models
    gc.collect()
    return rows


# ---- inference paths: compiled, bf16, int8, ONNX Runtime, CTranslate2 ------------------------------------------------------------


DECODINGS = {"greedy": 1, "beam-4": 4}


def compiled_generation_options(device: str) -> dict:
    """transformers' standard switch for compiled decoding: a static cache. On GPUs generate then compiles the
    decoding step itself; on a CPU it has to be asked to (`CompileConfig._compile_all_devices`)."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=True, mode="reduce-overhead" if device.startswith("cuda") else "default")
    config._compile_all_devices = True
    return dict(cache_implementation="static", compile_config=config)


def int8(model):
    """torch's dynamic int8 quantization of every `nn.Linear` (CPU): int8 weights, activations quantized per call."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)


def bf16(model):
    """The documented one-liner, on a copy: `model.to(torch.bfloat16)` (as `from_pretrained(..., dtype=torch.bfloat16)`)."""
    return copy.deepcopy(model).to(torch.bfloat16)


def ctranslate2_model(model, work_dir: Path) -> tuple[Path, list[str]]:
    """vaswani's model converted for CTranslate2 (`vaswani-convert-ctranslate2`), with a made-up vocabulary of the
    same size: the folder and the token strings by id."""
    from vaswani.modeling.ctranslate2_export import convert_to_ctranslate2

    config = model.config
    tokens = [f"t{i}" for i in range(config.vocab_size)]
    for name in ("pad", "bos", "eos", "unk"):
        tokens[getattr(config, f"{name}_token_id")] = f"<{name}>"
    return convert_to_ctranslate2(model, work_dir / "ct2", tokenizer=tokens, force=True), tokens


def onnxruntime_models(model, work_dir: Path, threads: list[int], int8: bool = True) -> dict:
    """vaswani's model exported (`vaswani.export_onnx`) in float32 and int8 (ONNX Runtime's dynamic quantization),
    each as an `ORTModelForSeq2SeqLM` per thread count (`intra_op_num_threads`): the paths by name."""
    from vaswani.modeling.onnx_export import export_onnx, quantized_copy
    from vaswani.modeling.onnxruntime_vaswani import ORTModelForSeq2SeqLM, import_onnxruntime, session_options

    import_onnxruntime()  # an ImportError before the export's work

    exports = {"float32": export_onnx(model, work_dir / "onnx")}
    if int8:
        exports["int8"] = quantized_copy(exports["float32"], work_dir / "onnx-int8")
    paths = {}
    for (precision, folder), count in itertools.product(exports.items(), threads):
        name = f"ONNX Runtime {precision}, {count} thread{'s' if count > 1 else ''}"
        paths[name] = ORTModelForSeq2SeqLM.from_pretrained(folder, session_options=session_options(count))
    return paths


_TRANSLATORS: dict = {}  # in the CTranslate2 process: one translator per folder and compute type


def ctranslate2_timings(folder: str, compute_type: str, device: str, threads: int, batch: list[list[str]],
                        options: dict, repeats: int, warmup: int) -> list[float]:  # fmt: skip
    """Seconds of `repeats` calls of `translate_batch(batch, **options)` after `warmup` ones. Runs in a process of
    its own (`CTranslate2Process`)."""
    import ctranslate2

    key = (folder, compute_type)
    if key not in _TRANSLATORS:
        _TRANSLATORS[key] = ctranslate2.Translator(folder, device=device, compute_type=compute_type, inter_threads=1,
                                                   intra_threads=threads)  # fmt: skip
    translator = _TRANSLATORS[key]
    for _ in range(warmup):
        translator.translate_batch(batch, **options)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        translator.translate_batch(batch, **options)
        seconds.append(time.perf_counter() - start)
    return seconds


class CTranslate2Process:
    """CTranslate2 timed in processes of its own, one per thread count. In one process with PyTorch, each slowed the
    other: both bring their own OpenMP runtime, and once CTranslate2 had translated, torch's small multi-threaded
    products took 15x as long (a 256 x 256 product at batch 1: 90 us against 6) and its decoding ran at a third of
    its speed, while CTranslate2 ran at a fifth of what it gives alone (2026-12-05, an Intel Xeon, 2 threads). Within
    one process, CTranslate2's first translator also sets the thread count the later ones get, so each count has its
    own process. A server runs one engine a process anyway."""

    def __enter__(self):
        self.pools = {}
        return self

    def time(self, folder: str, compute_type: str, device: str, threads: int, *args) -> Timing:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if threads not in self.pools:
            context = multiprocessing.get_context("spawn")
            self.pools[threads] = ProcessPoolExecutor(max_workers=1, mp_context=context)
        future = self.pools[threads].submit(ctranslate2_timings, folder, compute_type, device, threads, *args)
        return Timing(future.result())

    def __exit__(self, *exc):
        for pool in self.pools.values():
            pool.shutdown()


def time_decoding(models, inputs: dict, options: dict, args, warmup: int, **extra) -> list[Timing]:
    """Decoding of `inputs` by each model, alternating, with generate's `options` and `extra` arguments."""
    calls = [functools.partial(model.generate, **inputs, **options, **extra) for model in models]
    return time_alternating(calls, args, warmup)


def streaming_bandwidth(device: str, megabytes: int = 1024, repeats: int = 10) -> float:
    """Bytes per second at which this machine streams a buffer far larger than its caches (a sum over
    `megabytes` of float32, the best of `repeats`): the bound on decoding at batch 1, which reads every weight of
    the decoder once per token."""
    buffer = torch.ones(megabytes * 2**20 // 4, device=device)
    best = float("inf")
    for _ in range(repeats + 2):
        synchronize(device)
        start = time.perf_counter()
        buffer.sum()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return buffer.numel() * 4 / best


WEIGHT_BYTES = {"eager (fp32)": 4, "bf16 weights": 2, "int8 (quantize_dynamic)": 1}


def decoding_step_bytes(model, bytes_per_weight: int) -> int:
    """Bytes of weights one decoding step reads: the decoder's layers but for the cross-attention's key and value
    maps (computed once per source), and the output projection; matrices at `bytes_per_weight`, vectors (biases,
    LayerNorms) in float32 as int8 keeps them."""
    total = 0
    for name, parameter in model.get_decoder().named_parameters():
        if "encoder_attn.k_proj" in name or "encoder_attn.v_proj" in name or "embed_tokens" in name:
            continue
        total += parameter.numel() * (bytes_per_weight if parameter.dim() == 2 else 4)
    return total + model.get_output_embeddings().weight.numel() * bytes_per_weight


def benchmark_inference_paths(size: str, args, bandwidth: float | None = None) -> tuple[list[str], list[str]]:
    """New tokens per second at each generation batch size, greedy and beam 4, through each path, vaswani and
    MarianMT side by side and alternating (CTranslate2 converts vaswani only: its Marian converter assumes
    OPUS-MT's vocabulary layout). Each quantized or converted model is made once and timed at every batch size.
    Returns the table's rows and, per batch size and decoding, the fastest PyTorch path against CTranslate2 int8
    (and at batch 1, each path against the weight-streaming bound `bandwidth`)."""
    import tempfile

    models = build_pair(size, args.device, args.attn_implementation)
    for model in models:
        model.eval()
    config = models[0].config
    compiled = compiled_generation_options(args.device)
    variants = {"bf16 weights": [bf16(m) for m in models]}
    if args.device == "cpu":
        variants["int8 (quantize_dynamic)"] = [int8(m) for m in models]
    warmup = max(1, args.warmup)  # the first call of a compiled path compiles
    rows, summary = [], []
    with torch.no_grad(), tempfile.TemporaryDirectory() as work_dir, CTranslate2Process() as ctranslate2_process:
        try:
            import ctranslate2  # noqa: F401

            folder, tokens = ctranslate2_model(models[0], Path(work_dir))
        except ImportError:
            logger.warning("ctranslate2 is not installed: its rows are left out (pip install 'vaswani[serve]')")
            folder = None
        # ONNX Runtime through generate(), at one thread and at torch's count, as CTranslate2.
        threads = sorted({1, torch.get_num_threads()})
        try:
            onnxruntime_paths = onnxruntime_models(models[0], Path(work_dir), threads)
        except ImportError:
            logger.warning("onnxruntime is not installed: its rows are left out (pip install 'vaswani[serve]')")
            onnxruntime_paths = {}
        for batch_size in args.generation_batch_sizes:
            inputs = generation_inputs(config, batch_size, args)
            units = batch_size * args.new_tokens
            for decoding, beams in DECODINGS.items():
                options = dict(num_beams=beams, max_new_tokens=args.new_tokens, do_sample=False)
                pair = functools.partial(time_decoding, inputs=inputs, options=options, args=args, warmup=warmup)
                logger.info("%s: %s decoding at batch %d: eager and compiled", size, decoding, batch_size)
                paths = {"eager (fp32)": pair(models), "torch.compile, static cache": pair(models, **compiled)}
                for name, pair_of_models in variants.items():
                    logger.info("%s: %s decoding at batch %d: %s", size, decoding, batch_size, name)
                    paths[name] = pair(pair_of_models)
                for name, ort_model in onnxruntime_paths.items():
                    logger.info("%s: %s decoding at batch %d: %s", size, decoding, batch_size, name)
                    paths[name] = [pair([ort_model])[0], None]
                fixed = dict(beam_size=beams, max_decoding_length=args.new_tokens, min_decoding_length=args.new_tokens)
                # CTranslate2 at one thread and at torch's count: on a 2-core Xeon (2026-12-05) its two threads
                # decoded 5-10x slower than one, where torch's two ran 1.3-2x faster than one.
                for compute_type, count in itertools.product(("float32", "int8") if folder else (), threads):
                    name = f"CTranslate2 {compute_type}, {count} thread{'s' if count > 1 else ''}"
                    logger.info("%s: %s decoding at batch %d: %s", size, decoding, batch_size, name)
                    batch = [[tokens[i] for i in row] for row in inputs["input_ids"].tolist()]
                    timing = ctranslate2_process.time(str(folder), compute_type, args.device, count, batch, fixed,
                                                      args.repeats, warmup)  # fmt: skip
                    paths[name] = [timing, None]
                base = paths["eager (fp32)"][0].median
                label = f"{size}, batch {batch_size}, {decoding}"
                for name, (ours, marian) in paths.items():
                    ours_rate = ours.rate(units)
                    marian_rate = marian.rate(units) if marian is not None else None
                    rows.append(
                        f"| {label}: {name} | {fmt_rate(ours_rate)} | "
                        f"{fmt_rate(marian_rate) if marian_rate else 'n/a'} | "
                        f"{f'{ours_rate[0] / marian_rate[0]:.2f}x' if marian_rate else ''} | {base / ours.median:.2f}x |"
                    )
                # Every path but CTranslate2's runs behind transformers' generate().
                torch_paths = {n: t[0].median for n, t in paths.items() if not n.startswith("CTranslate2")}
                fastest = min(torch_paths, key=torch_paths.get)
                line = f"- {label}: the fastest generate() path is {fastest}"
                ct2_int8 = {n: t[0].median for n, t in paths.items() if n.startswith("CTranslate2 int8")}
                if ct2_int8:
                    best = min(ct2_int8, key=ct2_int8.get)
                    line += f"; {best} decodes {torch_paths[fastest] / ct2_int8[best]:.2f}x as fast"
                if bandwidth and batch_size == 1 and decoding == "greedy":
                    bound = []
                    for name, width in WEIGHT_BYTES.items():
                        if name in paths:
                            # steps/s if reading the weights were all a step did
                            limit = bandwidth / decoding_step_bytes(models[0], width)
                            bound.append(f"{name} {args.new_tokens / paths[name][0].median / limit:.0%}")
                    line += "; of the weight-streaming bound: " + ", ".join(bound)
                summary.append(line)
    del models, variants, onnxruntime_paths
    gc.collect()
    return rows, summary


# ---- where a decoding step's time goes -------------------------------------------------------------------------------


class StepClock:
    """Accumulates wall-clock time spent in named functions while `generate` runs: the model's forward (a decoding
    step), the encoder, and generate's own work per step (inputs preparation, logits processing, stopping criteria,
    the beam cache's reordering). Patches instance attributes and two transformers classes for the duration of a
    `with` block, and puts everything back."""

    def __init__(self, model):
        from transformers.cache_utils import EncoderDecoderCache
        from transformers.generation import LogitsProcessorList, StoppingCriteriaList

        self.seconds: dict[str, float] = {}
        encoder = model.get_encoder()
        self.targets = [
            (model, "forward", "decoder forward"),
            (encoder, "forward", "encoder"),
            (model, "prepare_inputs_for_generation", "inputs for the step"),
            (model, "_update_model_kwargs_for_generation", "inputs for the step"),
            (LogitsProcessorList, "__call__", "logits processors"),
            (StoppingCriteriaList, "__call__", "stopping criteria"),
            (EncoderDecoderCache, "reorder_cache", "beam cache reorder"),
        ]
        if hasattr(model, "_reorder_cache"):  # a model's own reordering, which generate calls instead (vaswani's)
            self.targets.append((model, "_reorder_cache", "beam cache reorder"))
        if hasattr(model, "decoder_with_past_session"):  # ONNX Runtime: the sessions' share of the forward and encoder
            self.targets.append((type(model.decoder_with_past_session), "run", ONNX_RUNTIME_PART))

    def _timed(self, function, name: str):
        @functools.wraps(function)  # generate reads the signatures of forward and prepare_inputs_for_generation
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed

    def __enter__(self):
        self.saved = []
        for owner, attribute, name in self.targets:
            self.saved.append((owner, attribute, owner.__dict__.get(attribute)))
            setattr(owner, attribute, self._timed(getattr(owner, attribute), name))
        return self

    def __exit__(self, *exc):
        for owner, attribute, original in reversed(self.saved):
            if original is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)


PROFILE_PARTS = ("decoder forward", "encoder", "inputs for the step", "logits processors", "stopping criteria",
                 "beam cache reorder")  # fmt: skip
# Inside the forward and the encoder of an ONNX Runtime model: its sessions' own time (the rest is Python around them).
ONNX_RUNTIME_PART = "ONNX Runtime sessions"


def onnxruntime_float32(model, work_dir: Path):
    """vaswani's model exported in float32 as an `ORTModelForSeq2SeqLM` at torch's thread count, or None without
    onnxruntime."""
    try:
        return next(iter(onnxruntime_models(model, work_dir, [torch.get_num_threads()], int8=False).values()))
    except ImportError:
        logger.warning("onnxruntime is not installed: its profile is left out (pip install 'vaswani[serve]')")
        return None


@torch.no_grad()
def profile_decoding(size: str, args) -> list[str]:
    """Per batch size and decoding, the time of one decoding step (generate's whole time over the new tokens) and
    the share of it in each part (`StepClock`); eager fp32, vaswani and MarianMT alternating, `args.repeats` calls
    each after a warm-up, the shares summed over the repetitions."""
    import tempfile

    models = build_pair(size, args.device, args.attn_implementation)
    config = models[0].config
    names = ["vaswani", "MarianMT"]
    work_dir = tempfile.TemporaryDirectory()
    ort_model = onnxruntime_float32(models[0].eval(), Path(work_dir.name)) if args.device == "cpu" else None
    if ort_model is not None:
        models, names = [*models, ort_model], [*names, "vaswani, ONNX Runtime float32"]
    rows, notes = [], []
    for batch_size in args.generation_batch_sizes:
        inputs = generation_inputs(config, batch_size, args)
        for decoding, beams in DECODINGS.items():
            options = dict(num_beams=beams, max_new_tokens=args.new_tokens, do_sample=False)
            logger.info("%s: profile of %s decoding at batch %d", size, decoding, batch_size)
            clocks = [StepClock(model.eval()) for model in models]
            totals = [0.0] * len(models)
            for model in models:
                model.generate(**inputs, **options)
            for _ in range(args.repeats):
                for index, (model, clock) in enumerate(zip(models, clocks, strict=True)):
                    with clock:
                        synchronize(args.device)
                        start = time.perf_counter()
                        model.generate(**inputs, **options)
                        synchronize(args.device)
                        totals[index] += time.perf_counter() - start
            for name, clock, total in zip(names, clocks, totals, strict=True):
                shares = [clock.seconds.get(part, 0.0) / total for part in PROFILE_PARTS]
                rest = 1 - sum(shares)
                step_ms = total / args.repeats / args.new_tokens * 1e3
                rows.append(f"| {size}, batch {batch_size}, {decoding} | {name} | {step_ms:.2f} | "
                            + " | ".join(f"{share:.0%}" for share in [*shares, rest]) + " |")  # fmt: skip
                if ONNX_RUNTIME_PART in clock.seconds:
                    inside = clock.seconds[ONNX_RUNTIME_PART] / args.repeats / args.new_tokens * 1e3
                    notes.append(f"- {size}, batch {batch_size}, {decoding}: ONNX Runtime's sessions take {inside:.2f} "
                                 f"of the {step_ms:.2f} ms a step ({inside / step_ms:.0%}); the rest is generate's own "
                                 "Python and the model's around the sessions")  # fmt: skip
    del models
    work_dir.cleanup()
    gc.collect()
    return rows, notes


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # The reference product: 1024^3 on a CPU; on a GPU that size runs far below the chip's rate (an H200 gave 29
    # TFLOP/s in float32, 100 in bf16, and the model's larger products exceeded it: MFU over 100%), so 8192^3.
    n = 8192 if args.device.startswith("cuda") else 1024
    measured = {torch.float32: matmul_rates(torch.float32, args.device, n)}
    if args.bf16:
        measured[torch.bfloat16] = matmul_rates(torch.bfloat16, args.device, n)
    rates = {dtype: max(kernels.values()) for dtype, kernels in measured.items()}  # MFU: of the fastest kernel
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    )
    lines = [
        f"Device: {device}; torch {torch.__version__}; attention: {args.attn_implementation}.",
        f"Matrix multiply ({n}^3): "
        + "; ".join(describe_rates(str(dtype).removeprefix("torch."), kernels) for dtype, kernels in measured.items())
        + ". MFU is a fraction of the fastest.",
        f"Training batch {args.batch_size} x ({args.source_length} + {args.target_length}) tokens, a quarter of the rows "
        f"padded; decoding {args.new_tokens} new tokens from {args.source_length}-token sources. Medians of "
        f"{args.repeats} repetitions after {args.warmup} warm-up, (range).",
        "",
        "| | vaswani | MarianMT | vaswani / MarianMT |",
        "| --- | --- | --- | --- |",
    ]
    for size in args.sizes:
        lines += benchmark_size(size, args, rates)
    if args.model_families is not None:
        families = list(dict.fromkeys(args.model_families or FAMILIES))  # no value: all; each once
        peers = "; ".join(f"{FAMILIES[f][0]}: {FAMILIES[f][1]} against {FAMILIES[f][2]}" for f in families)
        labels = {"causal-lm": "causal LM: labels = the inputs",
                  "masked-lm": f"masked LM: {MASKED_SHARE:.0%} of the positions labelled"}  # fmt: skip
        decoding = (
            f"; greedy decoding of {args.new_tokens} new tokens from {args.prompt_length}-token random prompts"
            if "causal-lm" in families and not args.skip_generation
            else ""
        )
        lines += [
            "",
            f"vaswani's other shapes against the transformers model of identical size (width/layers/heads/feed-forward "
            f"width, vocabulary, dropout; the peer otherwise as it is): {peers}. Training batch {args.batch_size} x "
            f"{args.sequence_length} tokens, unpadded ({'; '.join(labels[f] for f in families)}){decoding}. Medians "
            f"of {args.repeats} repetitions after {args.warmup} warm-up, (range).",
            "",
            "| | vaswani | peer | vaswani / peer |",
            "| --- | --- | --- | --- |",
        ]
        for size in args.sizes:
            for family in families:
                lines += benchmark_family(family, size, args)
    if args.profile_decoding:
        lines += [
            "",
            f"Where a decoding step's time goes: eager fp32, {args.new_tokens} new tokens from {args.source_length}-token "
            f"sources, {args.repeats} calls each after a warm-up; milliseconds per new token (per step of the whole "
            "batch), and the share of generate's time in each part (the encoder runs once per call).",
            "",
            "| size, batch, decoding | model | ms per step | " + " | ".join(PROFILE_PARTS) + " | rest of generate |",
            "| --- | --- | --- | " + " | ".join("---" for _ in PROFILE_PARTS) + " | --- |",
        ]
        notes = []
        for size in args.sizes:
            rows, size_notes = profile_decoding(size, args)
            lines += rows
            notes += size_notes
        lines += ["", *notes] if notes else []
    if args.inference_paths:
        bandwidth = streaming_bandwidth(args.device)
        lines += [
            "",
            f"Decoding through each path, new tokens/s, {args.new_tokens} new tokens from {args.source_length}-token "
            "sources (medians, range); the last column is vaswani's speed-up over its own eager fp32 decoding. "
            f"Streaming bandwidth measured here: {bandwidth / 1e9:.1f} GB/s.",
            "",
            "| size, batch, decoding: path | vaswani | MarianMT | vaswani / MarianMT | vaswani / eager |",
            "| --- | --- | --- | --- | --- |",
        ]
        summaries = []
        for size in args.sizes:
            rows, summary = benchmark_inference_paths(size, args, bandwidth)
            lines += rows
            summaries += summary
        lines += ["", *summaries]
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.write_text(table + "\n", encoding="utf-8")
    return table


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
