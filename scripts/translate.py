"""Translate sentences with any checkpoint: from the arguments, or one per line from standard input.

python -m vaswani.scripts.translate runs/en-de/model "The house is small." "I love you."
cat sentences.txt | python -m vaswani.scripts.translate runs/en-de/model --beam 4 --length-penalty 0.6
vaswani-translate runs/en-de/onnx "The house is small."   # an export of vaswani-export-onnx: ONNX Runtime decodes

One output line per input line; blank lines stay blank. Standard input is read and translated a chunk of lines at a
time (`--chunk-lines`), each chunk printed as it is done, so a file of any length keeps memory flat.
"""

import argparse
import itertools
import sys
from collections.abc import Iterable, Iterator

import torch
from tqdm.auto import tqdm

import vaswani  # noqa: F401  (registers the Auto classes)
from vaswani.modeling.pipeline_vaswani import is_onnx_export
from vaswani.scripts.recipe import (
    TooLongError,
    check_model_location,
    command_line_logging,
    load_model_and_tokenizer,
    require_at_least_one,
    runtime_name,
    translate,
)


class InputError(ValueError):
    """A line of the input that cannot be translated: not UTF-8 text, or longer than the model's positions."""


class NotUtf8Error(InputError):
    """A line of the input is not UTF-8 text."""


def read_lines(stream) -> Iterator[str]:
    """The lines of `stream`, without their line ends (LF or CRLF). A byte stream is decoded as UTF-8 strictly (a
    binary file is refused with a NotUtf8Error naming the byte and line, not translated as replacement characters);
    a text stream (a test's StringIO) is taken as it is."""
    for number, line in enumerate(stream, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise NotUtf8Error(f"stdin is not UTF-8 text (byte {line[error.start]:#04x} on line {number}): give "
                                   "sentences as UTF-8 text, one a line") from None  # fmt: skip
        yield line.removesuffix("\n").removesuffix("\r")


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """`lines` in lists of `size` (the last one shorter)."""
    iterator = iter(lines)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def translate_lines(model, tokenizer, lines: list[str], first_line: int = 1, **generation) -> list[str]:
    """The translations of `lines`, one per line; a blank line stays blank (translated, it came out as "Und"). A
    line longer than the model's positions raises an InputError naming it (numbered from `first_line`)."""
    numbers = [number for number, line in enumerate(lines, first_line) if line.strip()]
    try:
        translations = iter(translate(model, tokenizer, [line for line in lines if line.strip()], **generation))
    except TooLongError as error:
        reason = str(error).removeprefix(f"sentence {error.index + 1} ")
        raise InputError(f"line {numbers[error.index]} {reason}") from None
    return [next(translations) if line.strip() else "" for line in lines]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a folder (or Hub id) holding the model and its tokenizer")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: read stdin, one per line)")
    parser.add_argument("--beam", type=int, default=4, help="beam size (paper: 4)")
    parser.add_argument("--length-penalty", type=float, default=0.6, help="length penalty alpha (paper: 0.6)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-lines", type=int, default=1024,
                        help="lines of stdin read, translated and printed at a time (default: 1024)")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true", help="needed for checkpoints of other models")
    args = parser.parse_args(argv)
    command_line_logging()
    require_at_least_one(parser, args, "beam", "batch_size", "chunk_lines")
    try:
        check_model_location(args.checkpoint)
    except ValueError as error:
        parser.error(str(error))
    # Read the first chunk before loading the model, so that an empty or binary stdin is refused at once.
    stdin = getattr(sys.stdin, "buffer", sys.stdin)  # bytes, or a test's StringIO
    lines = iter([args.sentences]) if args.sentences else chunks(read_lines(stdin), args.chunk_lines)
    try:
        first = next(lines, [])
    except NotUtf8Error as error:
        parser.error(str(error))
    if not first:
        parser.error("no sentences given (as arguments or on stdin)")
    try:
        model, tokenizer = load_model_and_tokenizer(args.checkpoint, trust_remote_code=args.trust_remote_code)
    except ValueError as error:
        parser.error(str(error))
    if torch.cuda.is_available() and isinstance(model, torch.nn.Module) and not is_onnx_export(args.checkpoint):
        model = model.cuda()
    print(f"runtime: {runtime_name(model)}", file=sys.stderr)  # which runtime decodes: PyTorch or ONNX Runtime
    generation = {"num_beams": args.beam, "length_penalty": args.length_penalty, "batch_size": args.batch_size}
    streaming = not args.sentences
    progress = tqdm(desc="translating", unit=" lines", disable=not streaming)
    done = 0
    try:
        for chunk in itertools.chain([first], lines):
            for line in translate_lines(model, tokenizer, chunk, first_line=done + 1, **generation,
                                        progress=not streaming and len(chunk) > args.batch_size):  # fmt: skip
                print(line)
            sys.stdout.flush()
            done += len(chunk)
            progress.update(len(chunk))
    except InputError as error:  # not UTF-8, or too long: the lines of the chunks before it are translated and printed
        progress.close()  # before the message, so that the message is the last line
        parser.error(str(error))
    progress.close()


if __name__ == "__main__":
    main()
