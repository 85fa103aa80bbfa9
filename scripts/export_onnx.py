"""Export a vaswani checkpoint to ONNX (encoder.onnx, decoder.onnx) and check ONNX Runtime's logits against it.

vaswani-export-onnx runs/en-de/model runs/en-de/onnx

The output folder holds the two graphs (see `vaswani.modeling.onnx_export`), the config, the generation config and
the tokenizer. Before it reports success, the command runs the check sentences through ONNX Runtime and compares the
logits with the PyTorch model's (tolerance 1e-4). Needs `pip install "vaswani[serve]"`.
"""

import argparse
import logging
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vaswani  # noqa: F401  (registers the model)
from vaswani.modeling.onnx_export import OnnxExportError, export_onnx

logger = logging.getLogger("vaswani.export_onnx")
CHECK_SENTENCES = ["The house is small.", "This sentence checks that both compute the same logits."]
TOLERANCE = 1e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a vaswani checkpoint folder or Hub id, with its tokenizer")
    p.add_argument("output_dir", type=Path, help="the folder to write (new or empty)")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: torch's exporter's)")
    return p.parse_args(argv)


def max_logit_difference(model, tokenizer, onnx_dir: Path) -> float:
    import onnxruntime

    batch = tokenizer(CHECK_SENTENCES, return_tensors="pt", padding=True)
    decoder_input_ids = torch.cat([torch.full_like(batch.input_ids[:, :1], model.config.decoder_start_token_id),
                                   batch.input_ids[:, :-1]], dim=1)  # fmt: skip
    with torch.no_grad():
        reference = model(**batch, decoder_input_ids=decoder_input_ids).logits
    encoder = onnxruntime.InferenceSession(str(onnx_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    decoder = onnxruntime.InferenceSession(str(onnx_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    mask = batch.attention_mask.numpy()
    hidden = encoder.run(None, {"input_ids": batch.input_ids.numpy(), "attention_mask": mask})[0]
    logits = decoder.run(None, {"decoder_input_ids": decoder_input_ids.numpy(), "encoder_hidden_states": hidden,
                                "attention_mask": mask})[0]  # fmt: skip
    return (torch.from_numpy(logits) - reference).abs().max().item()


def run(argv: list[str] | None = None) -> Path:
    """The command with arguments `argv` (default: sys.argv); returns the ONNX model's folder."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        raise SystemExit(f"error: {args.output_dir} is not empty; choose a new output folder")
    model = AutoModelForSeq2SeqLM.from_pretrained(args.model, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        export_onnx(model, args.output_dir, tokenizer=tokenizer, opset_version=args.opset)
    except (OnnxExportError, ImportError) as error:
        raise SystemExit(f"error: {error}") from error
    difference = max_logit_difference(model, tokenizer, args.output_dir)
    if difference > TOLERANCE:
        raise SystemExit(f"error: ONNX Runtime's logits differ by {difference:.2e} (> {TOLERANCE}); "
                         f"the export in {args.output_dir} is wrong")  # fmt: skip
    print(
        f"Exported {args.model} -> {args.output_dir} (encoder.onnx, decoder.onnx); "
        f"largest logit difference in ONNX Runtime {difference:.1e}"
    )
    return args.output_dir


def main(argv: list[str] | None = None) -> None:
    """The console script: `run`, with exit status 0 on success (a returned value would become status 1)."""
    run(argv)


if __name__ == "__main__":
    main()
