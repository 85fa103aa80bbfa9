"""A one-minute demo of the whole stack: build a small Transformer, train it on a toy task (reverse a sequence of
symbols) with the paper's optimizer and learning-rate schedule, save a self-contained checkpoint, reload it through
`AutoModelForSeq2SeqLM` and translate with beam search.

    python -m vaswani.scripts.demo [--steps 800] [--output-dir runs/demo]
"""

import argparse
import logging
import random

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM

import vaswani
from vaswani.scripts import recipe

PAD, BOS, EOS, FIRST_SYMBOL = 0, 1, 2, 4
logger = logging.getLogger("vaswani.demo")


def reverse_example(rng: random.Random, vocab_size: int) -> tuple[list[int], list[int]]:
    symbols = [rng.randrange(FIRST_SYMBOL, vocab_size) for _ in range(rng.randint(3, 6))]
    return symbols + [EOS], symbols[::-1] + [EOS]


def collate(pairs: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    pad = torch.nn.utils.rnn.pad_sequence
    sources = [torch.tensor(source) for source, _ in pairs]
    targets = [torch.tensor(target) for _, target in pairs]
    input_ids = pad(sources, batch_first=True, padding_value=PAD)
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != PAD).long(),
        "labels": pad(targets, batch_first=True, padding_value=-100),  # -100: no loss on padding
    }


def paper_schedule(d_model: int, warmup_steps: int):
    """Section 5.3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)."""
    return lambda step: d_model**-0.5 * min((step + 1) ** -0.5, (step + 1) * warmup_steps**-1.5)


def train(model, steps: int, batch_size: int, seed: int) -> None:
    rng = random.Random(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, paper_schedule(model.config.d_model, warmup_steps=100))
    model.train()
    progress = tqdm(range(steps), desc="training")
    for _ in progress:
        batch = collate([reverse_example(rng, model.config.vocab_size) for _ in range(batch_size)])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800, help="training steps (default: 800)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output-dir", default="runs/demo", help="where the checkpoint is saved")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    recipe.require_at_least_one(parser, args, "steps", "batch_size")
    recipe.command_line_logging()

    torch.manual_seed(args.seed)
    config = vaswani.VaswaniConfig.from_preset(
        "tiny", vocab_size=14, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0
    )
    model = AutoModelForSeq2SeqLM.from_config(config)
    logger.info("Built %s with %.2fM parameters", type(model).__name__, model.num_parameters() / 1e6)
    train(model, args.steps, args.batch_size, args.seed)

    # The paper's decoding (Section 6.1) in the checkpoint's generation config: a model built from a config is greedy.
    model.generation_config = vaswani.paper_generation_config(model.generation_config)
    model.save_pretrained(args.output_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.output_dir).eval()
    logger.info("Saved and reloaded a self-contained checkpoint from %s", args.output_dir)

    rng = random.Random(args.seed + 1)
    tests = [reverse_example(rng, config.vocab_size) for _ in range(8)]
    batch = collate(tests)
    generated = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"])  # the saved beam 4
    correct = 0
    for row, (source, target) in zip(generated.tolist(), tests, strict=True):
        output = row[1 : row.index(EOS) + 1] if EOS in row else row[1:]
        correct += output == target
        print(f"{source[:-1]} -> {output[:-1]}  {'ok' if output == target else 'WRONG, expected ' + str(target[:-1])}")
    print(f"exact match: {correct}/{len(tests)} (beam 4, length penalty 0.6)")


if __name__ == "__main__":
    main()
