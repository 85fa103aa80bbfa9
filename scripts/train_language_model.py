"""Train a causal language model on the German verses of the embedded Bible, and report its validation perplexity.

    python -m vaswani.scripts.train_language_model --model vaswani --minutes 10 --output-dir runs/lm-vaswani
    python -m vaswani.scripts.train_language_model --model gpt2 --minutes 10 --output-dir runs/lm-gpt2 \\
        --tokenizer runs/lm-vaswani

The same recipe for both models, so that their perplexities compare: vaswani's decoder-only Transformer
(VaswaniForCausalLM) and transformers' GPT2LMHeadModel of identical size (the preset's d_model, decoder layers,
heads, feed-forward width and dropout, the same vocabulary; GPT-2 otherwise as GPT-2 is: learned positions, pre-LN,
GELU). Both train on the same examples in the same order (Trainer's sampler, seeded by --seed), with the same batch
size, optimizer (AdamW, transformers' defaults) and learning-rate schedule (linear warmup, then inverse square root:
a schedule that needs no total step count, which a wall-clock budget does not know), in float32, for the same
wall-clock budget. Training books: all but `data.VALIDATION_BOOKS` and `data.TEST_BOOKS`; perplexity is measured
on the validation books (tune on those; the test books stay unseen).

Writes into --output-dir the model and tokenizer (`AutoModelForCausalLM.from_pretrained`, or
`pipeline("text-generation", model=...)`, after `import vaswani`) and results.json.
"""

import argparse
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    GPT2Config,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import vaswani
from vaswani.scripts import data as corpus
from vaswani.scripts import recipe

logger = logging.getLogger("vaswani.train_language_model")
MODELS = ("vaswani", "gpt2")
PROMPT_WORDS = 4  # a prompt is the first words of a validation verse
MAX_NEW_TOKENS = 40
EVAL_BATCH_SIZE = 32
LOGGING_STEPS = 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="vaswani",
                   help="vaswani: VaswaniForCausalLM; gpt2: GPT2LMHeadModel of the same size")  # fmt: skip
    p.add_argument("--preset", choices=sorted(vaswani.PRESETS), default="small", help="model size (default: small)")
    p.add_argument("--dropout", type=float, help="P_drop of both models (default: the preset's)")
    p.add_argument("--minutes", default="10",
                   help="wall-clock training budget: minutes, or a duration such as 90s (default: 10)")  # fmt: skip
    p.add_argument("--max-steps", type=int, help="stop after this many steps, if the budget has not stopped it first")
    p.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary of a new tokenizer (default: 8000)")
    p.add_argument("--tokenizer", help="a trained tokenizer's folder (e.g. another run's --output-dir), so that "
                                       "both models see identical ids; default: train one on the training "
                                       "verses")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32,
                   help="verses per training batch, padded to the longest (default: 32)")  # fmt: skip
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    p.add_argument("--warmup-steps", type=int, default=200, help="linear warmup steps (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="model initialization, data order, dropout and sampling")
    p.add_argument("--max-train-verses", type=int, help="train on the first N training verses only (for tests)")
    p.add_argument("--samples", type=int, default=3, help="prompts from the validation books to continue (default: 3)")
    p.add_argument("--output-dir", type=Path, help="default: runs/lm-<model>")
    args = p.parse_args(argv)
    args.output_dir = args.output_dir or Path(f"runs/lm-{args.model}")
    recipe.require_at_least_one(p, args, "max_steps", "vocab_size", "batch_size", "max_train_verses")
    try:
        args.budget_seconds = recipe.parse_duration(args.minutes)
    except ValueError as error:
        p.error(f"--minutes: {error}")
    if args.samples < 0 or args.warmup_steps < 0:
        p.error("--samples and --warmup-steps cannot be negative")
    return args


def split_verses(verses: list[corpus.Verse], max_train: int | None = None) -> tuple[list[str], list[str]]:
    """(training texts, validation texts): whole books, as the translation job splits them; the test books are in
    neither (verses repeat across books, so a random split would measure memory)."""
    held_out = set(corpus.VALIDATION_BOOKS) | set(corpus.TEST_BOOKS)
    train = [v.text for v in verses if v.book not in held_out]
    validation = [v.text for v in verses if v.book in corpus.VALIDATION_BOOKS]
    return train[:max_train], validation


def load_tokenizer(args: argparse.Namespace, train_texts: list[str]):
    """--tokenizer's, or a new byte-level BPE vocabulary learned from the training verses only (deterministic: two
    runs on the same verses get the same one). Set, and so saved, to encode text as this job's prompts are,
    `[bos] + ids` (`add_bos_token`, no `add_eos_token`), so that `pipeline("text-generation")` prompts the saved
    model as the job does; the job's own ids do not depend on it (`encode`, `prompt_ids`)."""
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = vaswani.VaswaniTokenizer.train(train_texts, vocab_size=args.vocab_size, show_progress=False)
    tokenizer.add_bos_token, tokenizer.add_eos_token = True, False
    return tokenizer


def encode(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text as `[bos] + ids + [eos]`, cut at `max_length` tokens. Built by hand, not by the tokenizer's
    template (which decides for itself whether it adds `<s>` or `</s>`): the model learns to start after `<s>` and
    to end a verse with `</s>`."""
    encoded = tokenizer(texts, add_special_tokens=False).input_ids
    examples = [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] for ids in encoded]
    cut = sum(len(ids) > max_length for ids in examples)
    if cut:
        logger.warning("%d verses are longer than the model's %d positions: cut", cut, max_length)
    return [ids[:max_length] for ids in examples]


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A generation prompt: `[bos] + ids`, without the `</s>` that would tell the model the verse has ended."""
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]


def prompts(validation: list[str], count: int) -> list[str]:
    """The first `PROMPT_WORDS` words of `count` validation verses spread evenly over the validation books: fixed
    prompts, which neither model has trained on."""
    picked = [validation[i * len(validation) // count] for i in range(count)] if count else []
    return [" ".join(text.split()[:PROMPT_WORDS]) for text in picked]


def model_config(args: argparse.Namespace, tokenizer) -> vaswani.VaswaniConfig:
    """The size of both models: the preset with this tokenizer's vocabulary and special tokens (and --dropout)."""
    dropout = {} if args.dropout is None else {"dropout": args.dropout}
    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    return vaswani.VaswaniConfig.from_preset(args.preset, vocab_size=len(tokenizer), **special, **dropout)


def gpt2_config_like(config: vaswani.VaswaniConfig) -> GPT2Config:
    """GPT-2 with the decoder of `config`: width, layers, heads, feed-forward width, vocabulary, special tokens and
    dropout (on the embeddings and the sub-layer outputs, as P_drop; on the attention weights as
    attention_dropout); GPT-2's own positions (learned, `max_position_embeddings` of them), pre-LN and GELU."""
    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.max_position_embeddings, n_embd=config.d_model,
        n_layer=config.decoder_layers, n_head=config.decoder_attention_heads, n_inner=config.decoder_ffn_dim,
        embd_pdrop=config.dropout, resid_pdrop=config.dropout, attn_pdrop=config.attention_dropout,
        pad_token_id=config.pad_token_id, bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
    )  # fmt: skip


def build_model(name: str, config: vaswani.VaswaniConfig, seed: int):
    """A new float32 model, initialized from `seed`: `name` "vaswani" or "gpt2", of the size of `config`."""
    torch.manual_seed(seed)
    config = config if name == "vaswani" else gpt2_config_like(config)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


class NoCheckpoints(TrainerCallback):
    """Drops the checkpoint saves TimeBudget asks for (the translation job averages and resumes them): this job
    saves its final model once, with save_pretrained. Added after TimeBudget, so it has the last word."""

    def on_step_end(self, args, state, control, **kwargs):
        control.should_save = False
        return control


def training_arguments(args: argparse.Namespace) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(args.output_dir), max_steps=args.max_steps or -1, num_train_epochs=1000,  # the budget stops it
        per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
        lr_scheduler_type="inverse_sqrt", warmup_steps=args.warmup_steps,
        save_strategy="no", eval_strategy="no", logging_steps=LOGGING_STEPS, report_to=[],
        include_num_input_tokens_seen="non_padding", bf16=False, fp16=False, use_cpu=not torch.cuda.is_available(),
        seed=args.seed, dataloader_num_workers=0, disable_tqdm=False,
    )  # fmt: skip


def build_trainer(args: argparse.Namespace, model, tokenizer, examples: list[list[int]]):
    """Trainer with the job's callbacks (the time budget, its progress bar, no checkpoints). Padding, and labels
    equal to the inputs with padding at -100, come from `DataCollatorForLanguageModeling(mlm=False)`; each model
    shifts its labels itself."""
    time_budget = recipe.TimeBudget(args.budget_seconds)
    trainer = Trainer(
        model=model, args=training_arguments(args), train_dataset=[{"input_ids": ids} for ids in examples],
        processing_class=tokenizer, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[time_budget, NoCheckpoints()],
    )  # fmt: skip
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(recipe.BudgetProgress(time_budget))
    return trainer


@torch.no_grad()
def perplexity(model, examples: list[list[int]], pad_token_id: int, batch_size: int = EVAL_BATCH_SIZE) -> dict:
    """exp(summed negative log-likelihood / predicted tokens) of `examples` (`[bos] + ids + [eos]` each), every token
    after the first predicted, the eos included; in eval mode, from the model's logits, so that it is computed the
    same way for every model (not with each model's own loss). {"perplexity", "loss" (mean NLL), "tokens"}."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        input_ids = torch.full((len(batch), max(map(len, batch))), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)], attention_mask[row, : len(ids)] = torch.tensor(ids), 1
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
        targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100).to(model.device)
        total += torch.nn.functional.cross_entropy(logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                                                   ignore_index=-100, reduction="sum").item()  # fmt: skip
        count += int((targets != -100).sum())
    return {"perplexity": math.exp(total / count), "loss": total / count, "tokens": count}


@torch.no_grad()
def continuations(model, tokenizer, texts: list[str], seed: int) -> list[dict]:
    """For each prompt: one nucleus sample (top-p 0.9, and top_k=0, which turns off the top-50 that transformers
    would add; the seed set before each, so that each is reproducible on its own) and the greedy continuation,
    `MAX_NEW_TOKENS` at most, decoded without special tokens."""
    model.eval()
    results = []
    for text in texts:
        input_ids = torch.tensor([prompt_ids(tokenizer, text)], device=model.device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        transformers.set_seed(seed)
        sampled = model.generate(**inputs, do_sample=True, top_p=0.9, top_k=0, max_new_tokens=MAX_NEW_TOKENS)
        greedy = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
        decode = [tokenizer.decode(ids, skip_special_tokens=True) for ids in (sampled[0], greedy[0])]
        results.append({"prompt": text, "sampled": decode[0], "greedy": decode[1]})
    return results


def fingerprint(value) -> str:
    """A short hash of JSON-able `value`: two runs' results.json show whether they saw the same ids."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def final_training_loss(trainer, train_output) -> float:
    """The last logged training loss (the mean of the last `LOGGING_STEPS` steps), or the run's mean if none was."""
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return logged[-1] if logged else train_output.training_loss


def run(args: argparse.Namespace) -> dict:
    train_texts, validation_texts = split_verses(corpus.load_verses("de"), args.max_train_verses)
    logger.info("German verses: %d for training, %d for validation (books %s)", len(train_texts),
                len(validation_texts), ", ".join(map(str, corpus.VALIDATION_BOOKS)))  # fmt: skip
    with recipe.OutputDirLock(args.output_dir):
        tokenizer = load_tokenizer(args, train_texts)
        config = model_config(args, tokenizer)
        train = encode(tokenizer, train_texts, config.max_position_embeddings)
        validation = encode(tokenizer, validation_texts, config.max_position_embeddings)
        model = build_model(args.model, config, args.seed)
        parameters = model.num_parameters(only_trainable=True)
        logger.info("Model: %s (%s), preset %s, %.2fM parameters", args.model, type(model).__name__, args.preset,
                    parameters / 1e6)  # fmt: skip
        trainer = build_trainer(args, model, tokenizer, train)
        start = time.monotonic()
        train_output = trainer.train()
        seconds = time.monotonic() - start
        model = trainer.model
        scores = perplexity(model, validation, tokenizer.pad_token_id)
        tokens = int(trainer.state.num_input_tokens_seen)
        results = {
            "model": args.model, "model_class": type(model).__name__, "preset": args.preset, "parameters": parameters,
            "size": {"d_model": config.d_model, "layers": config.decoder_layers,
                     "heads": config.decoder_attention_heads, "ffn_dim": config.decoder_ffn_dim,
                     "vocab_size": len(tokenizer), "dropout": config.dropout},
            "steps": trainer.state.global_step, "training_tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1), "train_seconds": round(seconds, 2),
            "final_training_loss": round(final_training_loss(trainer, train_output), 4),
            "validation_perplexity": round(scores["perplexity"], 3), "validation_loss": round(scores["loss"], 4),
            "validation_tokens": scores["tokens"], "validation_verses": len(validation),
            "validation_books": list(corpus.VALIDATION_BOOKS), "training_verses": len(train),
            "training_examples_sha256": fingerprint(train),
            "tokenizer_sha256": fingerprint(tokenizer.backend_tokenizer.to_str()),
            "recipe": {"batch_size_verses": args.batch_size, "learning_rate": args.learning_rate,
                       "schedule": "linear warmup, inverse square root", "warmup_steps": args.warmup_steps,
                       "optimizer": trainer.args.optim.value, "budget_seconds": args.budget_seconds,
                       "max_steps": args.max_steps, "seed": args.seed, "dtype": str(model.dtype)},
            "samples": continuations(model, tokenizer, prompts(validation_texts, args.samples), args.seed),
        }  # fmt: skip
        model.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        (args.output_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> None:
    recipe.command_line_logging()
    args = parse_args(argv)
    try:
        r = run(args)
    except (corpus.DataError, recipe.OutputDirBusyError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"\n{r['model']} ({r['model_class']}, {r['parameters'] / 1e6:.2f}M parameters): {r['steps']} steps, "
          f"{r['training_tokens']:,} training tokens in {recipe.minutes_seconds(r['train_seconds'])} "
          f"({r['tokens_per_second']:,.0f} tokens/s), final training loss {r['final_training_loss']:.3f}")  # fmt: skip
    print(f"Validation perplexity {r['validation_perplexity']:.2f} ({r['validation_verses']} verses of the "
          f"validation books, {r['validation_tokens']:,} tokens)")  # fmt: skip
    for sample in r["samples"]:
        print(f"\n  prompt:  {sample['prompt']}\n  sampled: {sample['sampled']}\n  greedy:  {sample['greedy']}")
    print(f"\nModel, tokenizer and results.json: {args.output_dir}")


if __name__ == "__main__":
    main()
