"""Export a vaswani checkpoint to ONNX in optimum's seq2seq layout, and check ONNX Runtime against PyTorch.

vaswani-export-onnx runs/en-de/model runs/en-de/onnx                   # float32
vaswani-export-onnx runs/en-de/model runs/en-de/onnx-int8 --quantize int8

The output folder holds encoder_model.onnx, decoder_model.onnx and decoder_with_past_model.onnx (see
`vaswani.modeling.onnx_export`), the config, the generation config, the tokenizer and ort_config.json. It is what
`vaswani.ORTModelForSeq2SeqLM.from_pretrained(folder)`, `vaswani.pipeline("translation", folder)` and
`vaswani-translate folder` run. Before it reports success, the command scores the check sentences through ONNX
Runtime twice, the whole prefix at once and one cached step at a time, and compares the logits with the PyTorch
model's: a float32 export must agree within 1e-4; an int8 export's difference is reported (its BLEU change on the
test books is what `vaswani-serving-quality` measures). Needs `pip install "vaswani[serve]"`.
"""

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vaswani  # noqa: F401  (registers the model)
from vaswani.modeling.compat_vaswani import cache_of
from vaswani.modeling.onnx_export import QUANTIZATIONS, OnnxExportError, export_onnx
from vaswani.scripts import recipe

logger = logging.getLogger("vaswani.export_onnx")
CHECK_SENTENCES = ["The house is small.", "This sentence checks that both compute the same logits."]
TOLERANCE = 1e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a vaswani checkpoint folder or Hub id, with its tokenizer")
    p.add_argument("output_dir", type=Path, help="the folder to write (new or empty)")
    p.add_argument("--quantize", choices=QUANTIZATIONS,
                   help="int8: ONNX Runtime's dynamic quantization (int8 weights; default: float32)")  # fmt: skip
    p.add_argument("--max-positions", type=int,
                   help="positions the graphs cover, source and output alike (default: max_position_embeddings)")  # fmt: skip
    p.add_argument("--opset", type=int, help="ONNX opset version (default: torch's exporter's)")
    args = p.parse_args(argv)
    if args.max_positions is not None and args.max_positions < 2:
        p.error("--max-positions must be at least 2")
    return args


@torch.no_grad()
def max_logit_differences(model, tokenizer, onnx_dir: Path) -> tuple[float, float]:
    """The largest difference between PyTorch's teacher-forced logits for the check sentences and ONNX Runtime's,
    (whole prefix through decoder_model.onnx, one cached step at a time through decoder_with_past_model.onnx)."""
    from vaswani.modeling.onnxruntime_vaswani import ORTModelForSeq2SeqLM

    ort_model = ORTModelForSeq2SeqLM.from_pretrained(onnx_dir)
    # Cut to the positions the export covers: the check is of the graphs, not of long inputs.
    batch = tokenizer(CHECK_SENTENCES, return_tensors="pt", padding=True, truncation=True,
                      max_length=ort_model.max_positions)  # fmt: skip
    start = torch.full_like(batch.input_ids[:, :1], model.config.decoder_start_token_id)
    decoder_input_ids = torch.cat([start, batch.input_ids[:, :-1]], dim=1)  # (B, T)
    reference = model(**batch, decoder_input_ids=decoder_input_ids).logits  # (B, T, V)
    whole = ort_model(**batch, decoder_input_ids=decoder_input_ids, use_cache=False).logits
    encoder_outputs = ort_model.get_encoder()(**batch)
    cache, steps = None, []
    for t in range(decoder_input_ids.shape[1]):
        out = ort_model(encoder_outputs=encoder_outputs, attention_mask=batch.attention_mask,
                        decoder_input_ids=decoder_input_ids[:, t : t + 1], cache=cache, use_cache=True)  # fmt: skip
        cache = cache_of(out)
        steps.append(out.logits)
    stepwise = torch.cat(steps, dim=1)  # (B, T, V)
    return (whole - reference).abs().max().item(), (stepwise - reference).abs().max().item()


def run(argv: list[str] | None = None) -> Path:
    """The command with arguments `argv` (default: sys.argv); returns the ONNX model's folder."""
    recipe.command_line_logging()
    args = parse_args(argv)
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        raise SystemExit(f"error: {args.output_dir} is not empty; choose a new output folder")
    try:
        recipe.check_model_location(args.model)  # a mistyped folder: one line, not transformers' Hub-id error
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        export_onnx(model, args.output_dir, tokenizer=tokenizer, opset_version=args.opset, quantize=args.quantize,
                    max_positions=args.max_positions)  # fmt: skip
    except (OnnxExportError, ImportError) as error:
        raise SystemExit(f"error: {error}") from error
    whole, stepwise = max_logit_differences(model, tokenizer, args.output_dir)
    difference = max(whole, stepwise)
    if args.quantize is None and not difference <= TOLERANCE:
        raise SystemExit(f"error: ONNX Runtime's logits differ by {difference:.2e} (> {TOLERANCE}); "
                         f"the export in {args.output_dir} is wrong")  # fmt: skip
    precision = args.quantize or "float32"
    print(
        f"Exported {args.model} -> {args.output_dir} ({precision}: encoder_model.onnx, decoder_model.onnx, "
        f"decoder_with_past_model.onnx); largest logit difference in ONNX Runtime {whole:.1e} (whole prefix), "
        f"{stepwise:.1e} (cached steps)"
    )
    return args.output_dir


def main(argv: list[str] | None = None) -> None:
    """The console script: `run`, with exit status 0 on success (a returned value would become status 1)."""
    run(argv)


if __name__ == "__main__":
    main()
