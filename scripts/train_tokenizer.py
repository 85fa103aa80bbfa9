"""Train the joint source/target byte-level BPE vocabulary on text files (one sentence per line) and save it.

    python -m vaswani.scripts.train_tokenizer corpus.en corpus.de --vocab-size 8000 --output-dir my-tokenizer

The result loads with `AutoTokenizer.from_pretrained("my-tokenizer")` (with `import vaswani`) or with
`trust_remote_code=True` where vaswani is not installed.
"""

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

from vaswani.scripts import recipe
from vaswani.tokenization import VaswaniTokenizer

logger = logging.getLogger("vaswani.train_tokenizer")


def read_lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                yield line.rstrip("\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="UTF-8 text files, one sentence per line")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--model-max-length", type=int, default=1024)
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    recipe.command_line_logging()
    for path in args.files:  # fail before any work, naming the file
        if not path.is_file():
            parser.error(f"text file {path} not found")
    tokenizer = VaswaniTokenizer.train(
        read_lines(args.files), vocab_size=args.vocab_size, min_frequency=args.min_frequency,
        model_max_length=args.model_max_length,
    )  # fmt: skip
    tokenizer.save_pretrained(args.output_dir)
    logger.info("Saved a %d-token vocabulary to %s", len(tokenizer), args.output_dir)


if __name__ == "__main__":
    main()
