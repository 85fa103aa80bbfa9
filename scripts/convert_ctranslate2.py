"""Convert a vaswani checkpoint into a CTranslate2 model, and check that both compute the same log-probabilities.

vaswani-convert-ctranslate2 runs/en-de/model runs/en-de/ct2                       # float32 weights
vaswani-convert-ctranslate2 runs/en-de/model runs/en-de/ct2-int8 --quantization int8

The source is a checkpoint folder or Hub id with its tokenizer. The output folder is a CTranslate2 model
(`ctranslate2.Translator(folder)`) with the tokenizer in `tokenizer/`. Before it reports success, the command scores
the check sentences with both (CTranslate2's `score_batch` against vaswani's teacher-forced log-probabilities) and
compares greedy outputs. Needs `pip install "vaswani[serve]"`.
"""

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vaswani  # noqa: F401  (registers the model)
from vaswani.modeling.ctranslate2_export import QUANTIZATIONS, CTranslate2ConversionError, convert_to_ctranslate2
from vaswani.scripts import recipe

logger = logging.getLogger("vaswani.convert_ctranslate2")
CHECK_SENTENCES = ["The house is small.", "This sentence checks that both compute the same log-probabilities."]
# float32 weights must agree; quantized weights move log-probabilities by design: their difference is reported only
TOLERANCE = {None: 1e-3, "float32": 1e-3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a vaswani checkpoint folder or Hub id, with its tokenizer")
    p.add_argument("output_dir", type=Path, help="the CTranslate2 model folder to write (new or empty)")
    p.add_argument("--quantization", choices=QUANTIZATIONS, help="weight type (default: float32)")
    return p.parse_args(argv)


def compare(model, tokenizer, translator) -> tuple[float, bool]:
    """The largest difference between CTranslate2's and vaswani's per-token log-probabilities of vaswani's own
    greedy outputs of the check sentences, and whether CTranslate2's greedy outputs are the same tokens."""
    batch = tokenizer(CHECK_SENTENCES, return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = model.generate(**batch, num_beams=1, max_new_tokens=32)
        labels = generated[:, 1:].masked_fill(generated[:, 1:] == model.config.pad_token_id, -100)  # drop <s>
        logits = model(**batch, labels=labels).logits
    ours = logits.log_softmax(-1).gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)
    sources = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(CHECK_SENTENCES).input_ids]
    targets = [tokenizer.convert_ids_to_tokens([i for i in row.tolist() if i >= 0]) for row in labels]
    eos = tokenizer.eos_token
    scored = translator.score_batch(sources, [t[:-1] if t and t[-1] == eos else t for t in targets])
    difference = 0.0
    for row, result in enumerate(scored):
        n = min(len(result.log_probs), int((labels[row] >= 0).sum()))  # CTranslate2 also scores a final </s>
        theirs = torch.tensor(result.log_probs[:n])
        difference = max(difference, (theirs - ours[row, :n]).abs().max().item())
    hypotheses = translator.translate_batch(sources, beam_size=1, max_decoding_length=32)
    same = all(
        h.hypotheses[0] == [t for t in target if t != eos] for h, target in zip(hypotheses, targets, strict=True)
    )
    return difference, same


def run(argv: list[str] | None = None) -> Path:
    """The command with arguments `argv` (default: sys.argv); returns the CTranslate2 model's folder."""
    recipe.command_line_logging()
    args = parse_args(argv)
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        raise SystemExit(f"error: {args.output_dir} is not empty; choose a new output folder")
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        convert_to_ctranslate2(model, args.output_dir, tokenizer=tokenizer, quantization=args.quantization)
    except (CTranslate2ConversionError, ImportError) as error:
        raise SystemExit(f"error: {error}") from error
    import ctranslate2

    difference, same = compare(model, tokenizer, ctranslate2.Translator(str(args.output_dir)))
    tolerance = TOLERANCE.get(args.quantization)
    if tolerance is not None and (difference > tolerance or not same):
        raise SystemExit(
            f"error: CTranslate2's log-probabilities differ from vaswani's by {difference:.2e} (tolerance {tolerance}) "
            f"and its greedy outputs are {'the same' if same else 'different'}; the model in {args.output_dir} is wrong"
        )
    print(f"Converted {args.model} -> {args.output_dir} (CTranslate2, {args.quantization or 'float32'} weights); "
          f"largest log-probability difference {difference:.1e}, greedy outputs {'equal' if same else 'differ'}")  # fmt: skip
    return args.output_dir


def main(argv: list[str] | None = None) -> None:
    """The console script: `run`, with exit status 0 on success (a returned value would become status 1)."""
    run(argv)


if __name__ == "__main__":
    main()
