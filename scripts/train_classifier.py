"""Pretrain an encoder with masked-LM on German Bible verses, then fine-tune it to tell which part of the Bible a
verse comes from, scored on whole books it never saw; vaswani's encoder or transformers' BERT of the same size.

    python -m vaswani.scripts.train_classifier --model vaswani --pretrain-minutes 4 --finetune-minutes 2 \\
        --output-dir runs/cls-vaswani
    python -m vaswani.scripts.train_classifier --model bert --tokenizer runs/cls-vaswani/tokenizer \\
        --pretrain-minutes 4 --finetune-minutes 2 --output-dir runs/cls-bert

The task (`LABELS`, `HELD_OUT_BOOKS`): 6 classes, the parts law, history, poetry, prophets, gospels and Acts,
letters. One whole book of each part is held out: the masked-LM pretraining and the fine-tuning see only the other
books, and the accuracy is measured on the held-out ones (verses repeat across books, so a held-out verse's twin
would be in training if the split were by verse). Revelation (book 66) is no class: it is a single book, so held out
whole its class would have no training verse, and trained on it would have no held-out verse to be scored on; its
verses serve the pretraining only. Class imbalance: plain cross-entropy; the report gives the majority-class
baseline (the training set's most frequent class scored on the held-out verses), per-class and balanced accuracy.

Both models get the same tokenizer (give one model's `tokenizer` folder to the other with --tokenizer, or let both
train it: the training is deterministic), the same examples in the same order, the same masks (seeded collators),
batch size, optimizer (AdamW), schedule (warmup, then inverse square root: no end step to decay to under a time
budget) and budgets. Outputs in --output-dir: tokenizer/, mlm/ (the masked LM), classifier/ (loads with
`pipeline("text-classification", model=...)` after `import vaswani`) and results.json.
"""

import argparse
import hashlib
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

import vaswani
from vaswani.scripts import data as corpus
from vaswani.scripts import recipe

logger = logging.getLogger("vaswani.train_classifier")

# The parts of the Bible (books in KJV/Protestant order), the task's classes. Revelation (66) is none: see above.
PARTS = {"law": range(1, 6), "history": range(6, 18), "poetry": range(18, 23), "prophets": range(23, 40),
         "gospels and Acts": range(40, 45), "letters": range(45, 66)}  # fmt: skip
LABELS = tuple(PARTS)
# One mid-size book of each part, neither the largest nor a fragment (the held-out verses: 3,725 of 31,102). John,
# not a synoptic gospel, and 2 Corinthians, not Ephesians: their verses have near-twins in the training books.
HELD_OUT_BOOKS = {3: "Leviticus", 7: "Judges", 20: "Proverbs", 28: "Hosea", 43: "John", 47: "2 Corinthians"}
MAX_LENGTH = 128  # tokens per verse, <s> and </s> included: the longest German verse has 121 at most
MASK_TOKEN = "<mask>"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["vaswani", "bert"], default="vaswani",
                   help="vaswani's encoder, or transformers' BERT of the same size (default: vaswani)")  # fmt: skip
    p.add_argument("--preset", choices=sorted(vaswani.PRESETS), default="small", help="model size (default: small)")
    p.add_argument("--pretrain-minutes", default="4", help="masked-LM budget: minutes, or e.g. 90s (default: 4)")
    p.add_argument("--finetune-minutes", default="2", help="fine-tuning budget: minutes, or e.g. 90s (default: 2)")
    p.add_argument("--pretrain-max-steps", type=int, help="stop the pretraining after this many steps (tests)")
    p.add_argument("--finetune-max-steps", type=int, help="stop the fine-tuning after this many steps (tests)")
    p.add_argument("--vocab-size", type=int, default=8000, help="BPE vocabulary of a new tokenizer (default: 8000)")
    p.add_argument("--tokenizer", type=Path, help="use this tokenizer folder (e.g. the other model's run's)")
    p.add_argument("--batch-size", type=int, default=32, help="verses per step, both phases (default: 32)")
    p.add_argument("--learning-rate", type=float, default=5e-4, help="peak of the pretraining (default: 5e-4)")
    p.add_argument("--finetune-learning-rate", type=float, default=1e-4, help="peak of the fine-tuning (1e-4)")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warmup of each phase (default: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-verses", type=int, help="use every k-th verse, about this many in all (tests)")
    p.add_argument("--output-dir", type=Path, default=Path("runs/classifier"))
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> tuple[float, float]:
    """The two budgets in seconds; a bad flag ends the job here, before any work."""
    budgets = []
    for flag in ("pretrain_minutes", "finetune_minutes"):
        try:
            budgets.append(recipe.parse_duration(getattr(args, flag)))
        except ValueError as error:
            raise SystemExit(f"error: --{flag.replace('_', '-')}: {error}") from None
    for flag in ("pretrain_max_steps", "finetune_max_steps", "batch_size", "max_verses"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise SystemExit(f"error: --{flag.replace('_', '-')} must be at least 1.")
    return budgets[0], budgets[1]


# --- the task ----------------------------------------------------------------------------------------------------
def label_of(book: int) -> int | None:
    """The class of a book (an index of `LABELS`), or None for Revelation, which is no class."""
    return next((i for i, books in enumerate(PARTS.values()) if book in books), None)


def split_verses(verses: list[corpus.Verse]) -> dict[str, list[corpus.Verse]]:
    """pretraining: every verse outside the held-out books (Revelation's included); training: those with a class;
    held_out: the held-out books' verses, which neither phase sees."""
    seen = [v for v in verses if v.book not in HELD_OUT_BOOKS]
    return {"pretraining": seen, "training": [v for v in seen if label_of(v.book) is not None],
            "held_out": [v for v in verses if v.book in HELD_OUT_BOOKS]}  # fmt: skip


def load_verses(max_verses: int | None) -> list[corpus.Verse]:
    """The German verses; with `max_verses`, every k-th one, so that a small run still has every part and (nearly)
    every book rather than the first chapters of Genesis."""
    verses = corpus.load_verses("de")
    return verses[:: math.ceil(len(verses) / max_verses)] if max_verses else verses


def load_tokenizer(args, texts: list[str]):
    """--tokenizer's, or a new one trained on the pretraining verses (deterministic: two runs get the same ids) and
    saved in the output dir, with `<mask>` added after the vocabulary for the masked LM.

    Every verse becomes `<s> verse </s>`, as BERT's `[CLS] verse [SEP]`: BERT classifies from the first position's
    vector, which is then a fixed token trained to sum up the verse rather than the verse's first word (vaswani
    classifies from the mean of all positions, which `<s>` barely changes)."""
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    else:
        tokenizer = vaswani.VaswaniTokenizer.train(texts, vocab_size=args.vocab_size, show_progress=False)
    if tokenizer.mask_token is None:
        tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    tokenizer.add_bos_token = True
    if not args.tokenizer:
        tokenizer.save_pretrained(args.output_dir / "tokenizer")
    return tokenizer


def encode(tokenizer, verses: list[corpus.Verse], labelled: bool) -> list[dict]:
    encoded = tokenizer([v.text for v in verses], truncation=True, max_length=MAX_LENGTH)
    examples = [{"input_ids": ids, "attention_mask": mask}
                for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)]  # fmt: skip
    if labelled:
        for example, verse in zip(examples, verses, strict=True):
            example["labels"] = label_of(verse.book)
    return examples


def fingerprint(*examples) -> str:
    """A hash of the examples (ids, labels and the held-out masks, in order): equal in two runs on the same data."""
    return hashlib.sha256(json.dumps(examples).encode()).hexdigest()


# --- the models --------------------------------------------------------------------------------------------------
def build_masked_lm(args, tokenizer):
    """The preset's encoder as a masked LM: vaswani's, or BERT with the same width, layers, heads, feed-forward
    width, vocabulary and dropout (the rest as BERT has it: GELU, learned positions, its LayerNorm epsilon)."""
    config = vaswani.VaswaniConfig.from_preset(args.preset, vocab_size=len(tokenizer))
    torch.manual_seed(args.seed)
    if args.model == "vaswani":
        return vaswani.VaswaniForMaskedLM(config)
    return BertForMaskedLM(bert_config_like(config, tokenizer))


def bert_config_like(config: vaswani.VaswaniConfig, tokenizer) -> BertConfig:
    return BertConfig(vocab_size=config.vocab_size, hidden_size=config.d_model,
                      num_hidden_layers=config.encoder_layers, num_attention_heads=config.encoder_attention_heads,
                      intermediate_size=config.encoder_ffn_dim, hidden_dropout_prob=config.dropout,
                      attention_probs_dropout_prob=config.attention_dropout, pad_token_id=tokenizer.pad_token_id)  # fmt: skip


def parameters(model) -> int:
    return model.num_parameters(only_trainable=True)


# --- training ------------------------------------------------------------------------------------------------------
class NoCheckpoints(TrainerCallback):
    """Cancels the checkpoint saves `recipe.TimeBudget` asks for (placed for averaging, which this job does not do):
    each phase's model is saved once, at its end, by the job."""

    def on_step_end(self, args, state, control, **kwargs):
        control.should_save = False
        return control


def training_arguments(args, learning_rate: float, max_steps: int | None) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(args.output_dir), max_steps=max_steps or -1, num_train_epochs=1000, seed=args.seed,
        per_device_train_batch_size=args.batch_size, learning_rate=learning_rate, weight_decay=0.01,
        lr_scheduler_type="inverse_sqrt", warmup_steps=args.warmup_steps, logging_steps=50,
        include_num_input_tokens_seen="non_padding", save_strategy="no", eval_strategy="no", report_to=[],
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), disable_tqdm=False,
    )  # fmt: skip


def train(model, training_args, examples: list[dict], collator, tokenizer, seconds: float) -> dict:
    """Trains `model` for `seconds` (or the arguments' max_steps) and returns steps, seconds and tokens."""
    budget = recipe.TimeBudget(seconds)
    trainer = Trainer(model=model, args=training_args, train_dataset=examples, data_collator=collator,
                      processing_class=tokenizer, callbacks=[budget, NoCheckpoints()])  # fmt: skip
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(recipe.BudgetProgress(budget))
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    tokens = trainer.state.num_input_tokens_seen
    return {"steps": trainer.state.global_step, "seconds": round(seconds, 2), "tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1)}  # fmt: skip


def save(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


# --- evaluation ----------------------------------------------------------------------------------------------------
def mask_once(tokenizer, examples: list[dict], seed: int) -> dict[str, torch.Tensor]:
    """The held-out verses masked once, with a seeded collator: both models are scored on the same masks."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, seed=seed)
    return collator(examples)


@torch.inference_mode()
def masked_lm_loss(model, masked: dict[str, torch.Tensor], batch_size: int) -> tuple[float, int]:
    """Mean cross-entropy over all masked tokens (not a mean of batch means) and their number."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(masked["input_ids"]), batch_size):
        rows = {k: v[start : start + batch_size] for k, v in masked.items()}
        length = int(rows["attention_mask"].sum(1).max())
        rows = {k: v[:, :length].to(model.device) for k, v in rows.items()}
        logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), rows["labels"].flatten(),
                                                   ignore_index=-100, reduction="sum").item()  # fmt: skip
        count += int((rows["labels"] != -100).sum())
    return total / max(count, 1), count


@torch.inference_mode()
def predict(model, tokenizer, examples: list[dict], batch_size: int) -> list[int]:
    model.eval()
    collate = DataCollatorWithPadding(tokenizer)
    predictions = []
    for start in range(0, len(examples), batch_size):
        rows = [{k: e[k] for k in ("input_ids", "attention_mask")} for e in examples[start : start + batch_size]]
        batch = {k: v.to(model.device) for k, v in collate(rows).items()}
        predictions += model(**batch).logits.argmax(-1).tolist()
    return predictions


def accuracy_report(predictions: list[int], gold: list[int], training_labels: list[int]) -> dict:
    """Accuracy, per-class and balanced (mean per-class) accuracy on the held-out verses, and the majority-class
    baseline: always answering the training set's most frequent class."""
    majority = Counter(training_labels).most_common(1)[0][0]
    per_class = {}
    for label, name in enumerate(LABELS):
        picked = [p for p, g in zip(predictions, gold, strict=True) if g == label]
        if picked:
            per_class[name] = round(sum(p == label for p in picked) / len(picked), 4)
    return {
        "accuracy": round(sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold), 4),
        "balanced_accuracy": round(sum(per_class.values()) / len(per_class), 4),
        "majority_class": LABELS[majority],
        "majority_class_accuracy": round(sum(g == majority for g in gold) / len(gold), 4),
        "per_class_accuracy": per_class,
        "held_out_verses_per_class": {LABELS[k]: n for k, n in sorted(Counter(gold).items())},
    }


# --- the job ---------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    pretrain_seconds, finetune_seconds = check_args(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    split = split_verses(load_verses(args.max_verses))
    logger.info("Verses: %d for pretraining, %d labelled for fine-tuning, %d held out (%s)",
                len(split["pretraining"]), len(split["training"]), len(split["held_out"]),
                ", ".join(HELD_OUT_BOOKS.values()))  # fmt: skip
    tokenizer = load_tokenizer(args, [v.text for v in split["pretraining"]])
    pretraining = encode(tokenizer, split["pretraining"], labelled=False)
    training, held_out = encode(tokenizer, split["training"], True), encode(tokenizer, split["held_out"], True)

    model = build_masked_lm(args, tokenizer)
    logger.info("Masked LM: %s, preset %s, %.1fM parameters", model.config.model_type, args.preset,
                parameters(model) / 1e6)  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, seed=args.seed)
    pretrained = train(model, training_arguments(args, args.learning_rate, args.pretrain_max_steps),
                       pretraining, collator, tokenizer, pretrain_seconds)  # fmt: skip
    masked = mask_once(tokenizer, [{k: e[k] for k in ("input_ids", "attention_mask")} for e in held_out],
                       args.seed + 1)  # fmt: skip
    loss, masked_tokens = masked_lm_loss(model, masked, 4 * args.batch_size)
    mlm_folder = args.output_dir / "mlm"
    save(model, tokenizer, mlm_folder)
    logger.info("Pretrained %d steps; held-out masked-LM loss %.3f (perplexity %.1f)", pretrained["steps"], loss,
                math.exp(loss))  # fmt: skip

    torch.manual_seed(args.seed)  # the new classification head (and BERT's pooler, which masked-LM lacks)
    classifier = AutoModelForSequenceClassification.from_pretrained(
        mlm_folder, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )  # fmt: skip
    finetuned = train(classifier, training_arguments(args, args.finetune_learning_rate, args.finetune_max_steps),
                      training, DataCollatorWithPadding(tokenizer), tokenizer, finetune_seconds)  # fmt: skip
    save(classifier, tokenizer, args.output_dir / "classifier")
    predictions = predict(classifier, tokenizer, held_out, 4 * args.batch_size)
    scores = accuracy_report(predictions, [e["labels"] for e in held_out], [e["labels"] for e in training])

    results = {
        "model": args.model, "model_type": model.config.model_type, "preset": args.preset,
        "parameters": {"masked_lm": parameters(model), "classifier": parameters(classifier)},
        "labels": list(LABELS), "held_out_books": HELD_OUT_BOOKS,
        "verses": {name: len(verses) for name, verses in split.items()},
        "pretraining": {**pretrained, "held_out_masked_lm_loss": round(loss, 4),
                        "held_out_perplexity": round(math.exp(loss), 2), "held_out_masked_tokens": masked_tokens},
        "finetuning": {**finetuned, **scores},
        "vocab_size": len(tokenizer),
        "examples_sha256": fingerprint(pretraining, training, held_out, {k: v.tolist() for k, v in masked.items()}),
        "recipe": {"batch_size": args.batch_size, "learning_rate": args.learning_rate,
                   "finetune_learning_rate": args.finetune_learning_rate, "warmup_steps": args.warmup_steps,
                   "schedule": "inverse_sqrt", "optimizer": "adamw_torch_fused", "weight_decay": 0.01,
                   "seed": args.seed,
                   "max_verses": args.max_verses, "budgets_seconds": [pretrain_seconds, finetune_seconds]},
    }  # fmt: skip
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> None:
    recipe.command_line_logging()
    args = parse_args(argv)
    r = run(args)
    pre, fine = r["pretraining"], r["finetuning"]
    print(f"\n{r['model']} ({r['model_type']}, preset {r['preset']}, {r['parameters']['masked_lm']:,} "
          f"parameters)\npretraining: {pre['steps']} steps, {pre['tokens']} tokens ({pre['tokens_per_second']:.0f}/s); "
          f"held-out masked-LM loss {pre['held_out_masked_lm_loss']:.3f} (perplexity {pre['held_out_perplexity']})\n"
          f"fine-tuning: {fine['steps']} steps; held-out accuracy {fine['accuracy']:.3f} (balanced "
          f"{fine['balanced_accuracy']:.3f}; majority class '{fine['majority_class']}' "
          f"{fine['majority_class_accuracy']:.3f})")  # fmt: skip
    print("per class: " + ", ".join(f"{k} {v:.2f}" for k, v in fine["per_class_accuracy"].items()))
    print(f"held-out books: {', '.join(HELD_OUT_BOOKS.values())}; results: {args.output_dir / 'results.json'}")


if __name__ == "__main__":
    main()
