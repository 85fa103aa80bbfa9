"""Convert a MarianMT / OPUS-MT checkpoint into a vaswani checkpoint, or back, and check that the logits agree.

python -m vaswani.scripts.convert_marian Helsinki-NLP/opus-mt-en-de runs/opus-mt-en-de       # needs a network
python -m vaswani.scripts.convert_marian runs/opus-mt-en-de runs/back-to-marian --to-marian

The source is a folder or a Hub id; the tokenizer (MarianTokenizer, which needs `sentencepiece`) is copied along.
The output folder is self-contained: it loads with `AutoModelForSeq2SeqLM.from_pretrained(folder)` once `vaswani` is
imported, or with `trust_remote_code=True` without it.
"""

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vaswani
from vaswani.modeling.marian import MarianConversionError, from_marian, load_marian, to_marian
from vaswani.scripts import recipe

logger = logging.getLogger("vaswani.convert_marian")
TOLERANCE = 1e-4  # fp32 logits; the conversion only reorders floating-point sums (differences around 1e-7)
CHECK_SENTENCES = ["The house is small.", "This sentence checks that both models compute the same logits."]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a MarianMT folder or Hub id (or a vaswani folder with --to-marian)")
    p.add_argument("output_dir", type=Path, help="where to save the converted model and the tokenizer")
    p.add_argument("--to-marian", action="store_true", help="convert a vaswani checkpoint to MarianMT instead")
    p.add_argument("--revision", help="a Hub revision of the source")
    return p.parse_args(argv)


def max_logit_difference(a, b, tokenizer) -> float:
    """Runs both models on the check sentences (or random ids without a tokenizer) and compares the logits."""
    if tokenizer is not None:
        batch = dict(tokenizer(CHECK_SENTENCES, return_tensors="pt", padding=True))
    else:
        ids = torch.randint(0, a.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    start = a.config.decoder_start_token_id
    batch["decoder_input_ids"] = torch.cat([torch.full_like(batch["input_ids"][:, :1], start),
                                            batch["input_ids"][:, :5].clamp(max=a.config.pad_token_id)], dim=1)  # fmt: skip
    with torch.no_grad():
        return (a.eval()(**batch).logits - b.eval()(**batch).logits).abs().max().item()


def load_tokenizer(source: str, revision: str | None):
    try:
        return AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError, ImportError, TypeError) as error:  # TypeError: MarianTokenizer without its files
        logger.warning("No tokenizer copied from %s (%s); the logits check uses random ids.", source, error)
        return None


def run(argv: list[str] | None = None) -> Path:
    """The command with arguments `argv` (default: sys.argv); returns the converted model's folder."""
    recipe.command_line_logging()
    args = parse_args(argv)
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        raise SystemExit(f"error: {args.output_dir} is not empty; choose a new output folder")
    try:
        if args.to_marian:
            source = AutoModelForSeq2SeqLM.from_pretrained(args.source, revision=args.revision)
            if not isinstance(source, vaswani.VaswaniForConditionalGeneration):
                raise MarianConversionError(f"{args.source} is not a vaswani checkpoint ({type(source).__name__}).")
            converted = to_marian(source)
        else:
            source = load_marian(args.source, revision=args.revision)
            converted = from_marian(source)
    except MarianConversionError as error:
        raise SystemExit(f"error: {error}") from error
    tokenizer = load_tokenizer(args.source, args.revision)
    difference = max_logit_difference(source, converted, tokenizer)
    if difference > TOLERANCE:
        raise SystemExit(f"error: the converted model's logits differ by {difference:.2e} (> {TOLERANCE}); not saved")
    converted.save_pretrained(args.output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(args.output_dir)
    print(f"Converted {args.source} -> {args.output_dir} ({type(converted).__name__}); "
          f"max logit difference {difference:.1e}")  # fmt: skip
    return args.output_dir


def main(argv: list[str] | None = None) -> None:
    """The console script: `run`, with exit status 0 on success (a returned value would become status 1)."""
    run(argv)


if __name__ == "__main__":
    main()
