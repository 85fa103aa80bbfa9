"""Quality and speed of each serving path on the held-out test books, for a trained vaswani checkpoint.

vaswani-serving-quality runs/en-de/model                      # the main job's model: all 1,137 test verses
vaswani-serving-quality runs/en-de/model --max-sentences 300  # the first 300
vaswani-serving-quality runs/en-de/onnx                       # an export of vaswani-export-onnx: its one row

The same sentences go through PyTorch in float32 (eager), PyTorch int8 (`torch.ao.quantization.quantize_dynamic`),
PyTorch with bf16 weights (`model.to(torch.bfloat16)`), ONNX Runtime behind the same `generate()` in float32 and int8
(`vaswani-export-onnx`, `--quantize int8`) and, where `ctranslate2` is installed, CTranslate2 in float32 and int8
(`vaswani-convert-ctranslate2`), each with the
paper's decoding (beam 4, length penalty 0.6, output up to input + 50 tokens) in batches of 32 sentences of similar
length. It prints one table: sacreBLEU BLEU and chrF, the change against float32, and the seconds each path took.
Paths run one after the other, PyTorch's in this process and CTranslate2's each in a process of its own (in
one process the two runtimes slow each other); the speed column compares within one run only.
"""

import argparse
import copy
import functools
import logging
import tempfile
import time
from pathlib import Path

import torch

import vaswani  # noqa: F401  (registers the model)
from vaswani.scripts import data, recipe

logger = logging.getLogger("vaswani.serving_quality")
BATCH_SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a trained vaswani checkpoint folder (or Hub id) with its tokenizer")
    p.add_argument("--max-sentences", type=int, help="use only the first N test pairs (default: all)")
    p.add_argument("--source", default="en")
    p.add_argument("--target", default="de")
    p.add_argument("--onnxruntime-threads", type=int, default=torch.get_num_threads(),
                   help="ONNX Runtime's intra_op_num_threads (default: torch's thread count)")  # fmt: skip
    p.add_argument("--ctranslate2-threads", type=int, default=1,
                   help="CTranslate2's intra_threads (default 1: on a 2-core Intel Xeon its two threads decoded 4-10x "
                   "slower than one, 2026-12-05; torch keeps its own count)")  # fmt: skip
    args = p.parse_args(argv)
    recipe.require_at_least_one(p, args, "max_sentences", "ctranslate2_threads", "onnxruntime_threads")
    return args


def source_batches(tokenizer, sentences: list[str]) -> list[tuple[list[int], list[list[str]]]]:
    """The batches `recipe.translate` makes (similar lengths together), as CTranslate2's source tokens: each the
    sentences' indices and their token strings, with the `</s>` the tokenizer appends."""
    batches = []
    for indices in recipe.length_batches(sentences, BATCH_SIZE):
        ids = tokenizer([sentences[i] for i in indices]).input_ids
        batches.append((indices, [tokenizer.convert_ids_to_tokens(row) for row in ids]))
    return batches


def ctranslate2_translate(folder: str, compute_type: str, threads: int, batches) -> tuple[list[list[str]], float]:
    """The paper's decoding in CTranslate2 (beam 4, length penalty 0.6, output up to the batch's longest input + 50),
    run in a process of its own (CTranslate2 and PyTorch in one process slow each other: their OpenMP runtimes
    contend; `benchmark.CTranslate2Process`). Returns each batch's best hypotheses as tokens, and the seconds taken."""
    import ctranslate2

    translator = ctranslate2.Translator(folder, compute_type=compute_type, intra_threads=threads)
    start = time.perf_counter()
    outputs = []
    for _, sources in batches:
        results = translator.translate_batch(
            sources, beam_size=4, length_penalty=0.6, max_decoding_length=max(map(len, sources)) + 50
        )
        outputs.append([result.hypotheses[0] for result in results])
    return outputs, time.perf_counter() - start


def onnxruntime_paths(model, tokenizer, work_dir: Path, threads: int, translate) -> dict:
    """ONNX Runtime behind the same `generate()`: the model exported in float32 and int8 (ONNX Runtime's dynamic
    quantization), each run through `translate(ort_model)`. Exported before any row is timed."""
    from vaswani.modeling.onnx_export import export_onnx, quantized_copy

    logger.info("exporting to ONNX (float32 and int8)")
    float32 = export_onnx(model, work_dir / "onnx", tokenizer=tokenizer)
    int8_folder = quantized_copy(float32, work_dir / "onnx-int8")
    return {
        f"ONNX Runtime {precision}": functools.partial(translate, onnxruntime_model(folder, threads))
        for precision, folder in (("float32", float32), ("int8", int8_folder))
    }


def onnxruntime_model(folder, threads: int):
    """The export in `folder` as an `ORTModelForSeq2SeqLM` whose sessions use `threads` threads."""
    from vaswani.modeling.onnxruntime_vaswani import ORTModelForSeq2SeqLM, session_options

    return ORTModelForSeq2SeqLM.from_pretrained(folder, session_options=session_options(threads))


def in_own_process(function, *args):
    """`function(*args)` in a fresh process, its result returned."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def run(argv: list[str] | None = None) -> str:
    """The command with arguments `argv` (default: sys.argv); returns the table."""
    recipe.command_line_logging()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    args = parse_args(argv)
    try:  # the model first: a mistyped path is refused before the corpus is read
        model, tokenizer = recipe.load_model_and_tokenizer(args.model)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    model.eval()
    pairs = data.load_bible(args.source, args.target).test[: args.max_sentences]
    sources = [s for s, _ in pairs]

    def translate(translator) -> list[str]:
        return recipe.translate(translator, tokenizer, sources, batch_size=BATCH_SIZE)

    if recipe.is_onnx_export(args.model):  # an exported folder: the one row it gives
        model = onnxruntime_model(args.model, args.onnxruntime_threads)
        return print_table(args, pairs, {recipe.runtime_name(model): functools.partial(translate, model)}, tokenizer)
    paths = {
        "PyTorch float32": lambda: recipe.translate(model, tokenizer, sources, batch_size=BATCH_SIZE),
        "PyTorch int8 (quantize_dynamic)": lambda: recipe.translate(
            torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8),
            tokenizer,
            sources,
            batch_size=BATCH_SIZE,
        ),  # fmt: skip
        # bf16 weights, as `from_pretrained(..., dtype=torch.bfloat16)` loads them
        "PyTorch bf16": lambda: recipe.translate(
            copy.deepcopy(model).to(torch.bfloat16), tokenizer, sources, batch_size=BATCH_SIZE
        ),
    }
    work_dir = tempfile.TemporaryDirectory()
    try:
        paths |= onnxruntime_paths(model, tokenizer, Path(work_dir.name), args.onnxruntime_threads, translate)
    except ImportError:
        logger.warning("onnxruntime is not installed: its rows are left out (pip install 'vaswani[serve]')")
    batches = None
    try:
        import ctranslate2  # noqa: F401

        from vaswani.modeling.ctranslate2_export import convert_to_ctranslate2

        folder = convert_to_ctranslate2(model, Path(work_dir.name) / "ct2", tokenizer=tokenizer)
        batches = source_batches(tokenizer, sources)
        for compute_type in ("float32", "int8"):
            paths[f"CTranslate2 {compute_type}"] = functools.partial(
                in_own_process, ctranslate2_translate, str(folder), compute_type, args.ctranslate2_threads, batches
            )
    except ImportError:
        logger.warning("ctranslate2 is not installed: its rows are left out (pip install 'vaswani[serve]')")
    try:
        return print_table(args, pairs, paths, tokenizer, batches)
    finally:
        work_dir.cleanup()


def print_table(args, pairs, paths: dict, tokenizer, batches=None) -> str:
    """Runs each path over the test sources, one after the other, and prints (and returns) the table."""
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    lines = [
        f"{args.model}: {len(pairs)} test pairs ({args.source}->{args.target}), beam 4, length penalty 0.6; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; ONNX Runtime {args.onnxruntime_threads} "
        f"thread{'s' if args.onnxruntime_threads > 1 else ''}; CTranslate2 {args.ctranslate2_threads} "
        f"thread{'s' if args.ctranslate2_threads > 1 else ''}.",
        "",
        "| path | BLEU | chrF | BLEU change | seconds | sentences/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    baseline = None
    for name, run in paths.items():
        logger.info("translating the test books: %s", name)
        start = time.perf_counter()
        hypotheses = run()
        seconds = time.perf_counter() - start
        if isinstance(hypotheses, tuple):  # CTranslate2's tokens by batch, and its own time
            outputs, seconds = hypotheses
            hypotheses = [""] * len(sources)
            for (indices, _), batch in zip(batches, outputs, strict=True):
                for i, tokens in zip(indices, batch, strict=True):
                    hypotheses[i] = tokenizer.convert_tokens_to_string(tokens).strip()
        scores = recipe.score(hypotheses, references)
        baseline = baseline if baseline is not None else scores["bleu"]
        lines.append(f"| {name} | {scores['bleu']:.2f} | {scores['chrf']:.2f} | {scores['bleu'] - baseline:+.2f} | "
                     f"{seconds:.0f} | {len(pairs) / seconds:.1f} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    return table


def main(argv: list[str] | None = None) -> None:
    """The console script: `run`, with exit status 0 on success (a returned value would become status 1)."""
    run(argv)


if __name__ == "__main__":
    main()
