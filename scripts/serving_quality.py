"""Quality and speed of each serving path on the held-out test books, for a trained vaswani checkpoint.

vaswani-serving-quality runs/en-de/model                      # the main job's model: all 1,137 test verses
vaswani-serving-quality runs/en-de/model --max-sentences 300  # the first 300

The same sentences go through PyTorch in float32 (eager), PyTorch int8 (`torch.ao.quantization.quantize_dynamic`),
PyTorch with bf16 weights (`model.to(torch.bfloat16)`) and, where `ctranslate2` is installed, CTranslate2 in float32 and int8 (`vaswani-convert-ctranslate2`), each with the
paper's decoding (beam 4, length penalty 0.6, output up to input + 50 tokens) in batches of 32 sentences of similar
length. It prints one table: sacreBLEU BLEU and chrF, the change against float32, and the seconds each path took.
Paths run one after the other in this process, so the speed column compares within one run only.
"""

import argparse
import copy
import logging
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

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
    return p.parse_args(argv)


def ctranslate2_translate(translator, tokenizer, sentences: list[str]) -> list[str]:
    """The paper's decoding in CTranslate2, batched as `recipe.translate` batches: similar lengths together, the
    output bound the batch's longest input + 50."""
    outputs = [""] * len(sentences)
    for indices in recipe.length_batches(sentences, BATCH_SIZE):
        sources = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer([sentences[i] for i in indices]).input_ids]
        results = translator.translate_batch(
            sources, beam_size=4, length_penalty=0.6, max_decoding_length=max(map(len, sources)) + 50
        )
        for i, result in zip(indices, results, strict=True):
            outputs[i] = tokenizer.convert_tokens_to_string(result.hypotheses[0]).strip()
    return outputs


def main(argv: list[str] | None = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    args = parse_args(argv)
    pairs = data.load_bible(args.source, args.target).test[: args.max_sentences]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
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
        import ctranslate2

        from vaswani.modeling.ctranslate2_export import convert_to_ctranslate2

        folder = convert_to_ctranslate2(model, Path(work_dir.name) / "ct2", tokenizer=tokenizer)
        threads = torch.get_num_threads()
        for compute_type in ("float32", "int8"):
            translator = ctranslate2.Translator(str(folder), compute_type=compute_type, intra_threads=threads)
            paths[f"CTranslate2 {compute_type}"] = lambda t=translator: ctranslate2_translate(t, tokenizer, sources)
    except ImportError:
        logger.warning("ctranslate2 is not installed: its rows are left out (pip install 'vaswani[serve]')")
    lines = [
        f"{args.model}: {len(pairs)} test pairs ({args.source}->{args.target}), beam 4, length penalty 0.6; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
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
        scores = recipe.score(hypotheses, references)
        baseline = baseline if baseline is not None else scores["bleu"]
        lines.append(f"| {name} | {scores['bleu']:.2f} | {scores['chrf']:.2f} | {scores['bleu'] - baseline:+.2f} | "
                     f"{seconds:.0f} | {len(pairs) / seconds:.1f} |")  # fmt: skip
    work_dir.cleanup()
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main()
