"""Translate sentences with any checkpoint: from the arguments, or one per line from standard input.

python -m vaswani.scripts.translate runs/en-de/model "The house is small." "I love you."
cat sentences.txt | python -m vaswani.scripts.translate runs/en-de/model --beam 4 --length-penalty 0.6

One output line per input line; blank lines stay blank.
"""

import argparse
import sys

import torch

import vaswani  # noqa: F401  (registers the Auto classes)
from vaswani.scripts.recipe import check_model_location, load_model_and_tokenizer, translate


def read_lines(stream) -> list[str]:
    """The lines of byte stream `stream` as UTF-8 text (strictly: a binary file is refused, not translated as
    replacement characters), without their line ends (LF or CRLF)."""
    text = stream.read().decode("utf-8")
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a folder (or Hub id) holding the model and its tokenizer")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin, one per line)")
    parser.add_argument("--beam", type=int, default=4, help="beam size (paper: 4)")
    parser.add_argument("--length-penalty", type=float, default=0.6, help="length penalty alpha (paper: 0.6)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--trust-remote-code", action="store_true", help="needed for checkpoints of other models")
    args = parser.parse_args(argv)
    if args.beam < 1:
        parser.error("--beam must be at least 1")
    try:
        check_model_location(args.checkpoint)
    except ValueError as error:
        parser.error(str(error))
    try:
        sentences = args.sentences or read_lines(sys.stdin.buffer)
    except UnicodeDecodeError as error:
        parser.error(f"stdin is not UTF-8 text (byte {error.object[error.start]:#04x} on line "
                     f"{error.object[: error.start].count(10) + 1}): give sentences as UTF-8 text, one a line")  # fmt: skip
    if not sentences:
        parser.error("no sentences given (as arguments or on stdin)")
    try:
        model, tokenizer = load_model_and_tokenizer(args.checkpoint, trust_remote_code=args.trust_remote_code)
    except ValueError as error:
        parser.error(str(error))
    if torch.cuda.is_available():
        model = model.cuda()
    # A blank line stays a blank line, so that the output lines up with the input (translated, it came out as "Und").
    texts = [sentence for sentence in sentences if sentence.strip()]
    translations = iter(translate(model, tokenizer, texts, num_beams=args.beam, length_penalty=args.length_penalty,
                                  batch_size=args.batch_size, progress=len(texts) > args.batch_size))  # fmt: skip
    for sentence in sentences:
        print(next(translations) if sentence.strip() else "")


if __name__ == "__main__":
    main()
