"""vaswani -> ONNX, with torch's own exporter (`torch.onnx.export(..., dynamo=True)`), for ONNX Runtime.

Why torch.onnx and not optimum: optimum's ONNX export and `ORTModelForSeq2SeqLM` (which would run `generate()`,
beam search included, over ONNX Runtime) live in `optimum-onnx`, whose newest release (0.1.0) requires
transformers < 4.58; vaswani needs transformers 5. torch's exporter needs only `onnx` and `onnxscript`.

Two graphs, the split every seq2seq ONNX export makes, so that the source is encoded once per sentence:

    encoder.onnx  input_ids (B, S), attention_mask (B, S)                      -> last_hidden_state (B, S, d_model)
    decoder.onnx  decoder_input_ids (B, T), encoder_hidden_states (B, S, d_model),
                  attention_mask (B, S)                                         -> logits (B, T, V)

Batch and lengths are dynamic (up to `max_position_embeddings` positions). The decoder takes the whole target
prefix at every step (no key/value cache in the graph), so a decoding loop over it costs O(T^2) per sentence:
fine for scoring and short outputs; for fast decoding use CTranslate2 (`vaswani-convert-ctranslate2`).
`greedy_decode` below is the reference loop over the two graphs.

    vaswani-export-onnx runs/en-de/model runs/en-de/onnx

Needs `onnx`, `onnxscript` and, to run, `onnxruntime` (`pip install "vaswani[serve]"`). Part of the plugin.
"""

import logging
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

SUPPORTED_ATTENTION = ("eager", "sdpa")


class OnnxExportError(ValueError):
    """The model has a setting the ONNX export does not support; the message names it."""


class EncoderGraph(nn.Module):
    """The encoder stack (Section 3.1) as one graph."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, d_model)


class DecoderGraph(nn.Module):
    """The decoder stack and the output projection (Section 3.4), teacher-forced over the given prefix."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, decoder_input_ids, encoder_hidden_states, attention_mask) -> torch.Tensor:
        return self.model(
            encoder_outputs=(encoder_hidden_states,),
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        ).logits  # (B, T, V)


def check_exportable(model) -> None:
    attention = model.config._attn_implementation
    if attention not in SUPPORTED_ATTENTION:
        raise OnnxExportError(
            f"`attn_implementation={attention!r}` does not export to ONNX: load the model with "
            f'`attn_implementation="sdpa"` (or "eager") for the export.'
        )


def export_onnx(model_or_path, output_dir, *, tokenizer=None, opset_version: int | None = None) -> Path:
    """Writes `encoder.onnx` and `decoder.onnx` of a vaswani model (plus its config, generation config and, where
    given or found, its tokenizer) into `output_dir`, and returns the folder.

    Args:
        model_or_path: a `VaswaniForConditionalGeneration`, or a checkpoint folder / Hub id (its tokenizer is then
            saved beside the graphs too).
        output_dir: the folder to write.
        tokenizer: the model's tokenizer, saved beside the graphs (optional with a model object).
        opset_version: the ONNX opset (default: torch's exporter's own).

    Raises `OnnxExportError` for an attention implementation that does not export (flash, flex), and
    `ImportError` without `onnx` / `onnxscript`.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "ONNX export needs the `onnx` and `onnxscript` packages: `pip install 'vaswani[serve]'`."
        ) from error
    model = model_or_path
    if isinstance(model_or_path, str | Path):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        model = AutoModelForSeq2SeqLM.from_pretrained(model_or_path, attn_implementation="sdpa")
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_or_path)
    if getattr(model.config, "model_type", None) != "vaswani":
        raise OnnxExportError(f"Expected a vaswani model, got model_type {model.config.model_type!r}.")
    check_exportable(model)
    was_training = model.training
    model.eval()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    positions = model.config.max_position_embeddings
    batch = torch.export.Dim("batch", max=4096)
    source = torch.export.Dim("source", max=positions)
    target = torch.export.Dim("target", max=positions)
    config = model.config
    example_ids = torch.full((2, 5), config.unk_token_id, dtype=torch.long, device=model.device)
    example_mask = torch.ones_like(example_ids)
    start = torch.full((2, 3), config.decoder_start_token_id, dtype=torch.long, device=model.device)
    options = dict(dynamo=True, opset_version=opset_version, external_data=False, verbose=False)
    try:
        with torch.no_grad():
            encoder = EncoderGraph(model).eval()
            hidden = encoder(example_ids, example_mask)
            torch.onnx.export(
                encoder, (example_ids, example_mask), output_dir / "encoder.onnx",
                input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                dynamic_shapes=({0: batch, 1: source}, {0: batch, 1: source}), **options,
            )  # fmt: skip
            torch.onnx.export(
                DecoderGraph(model).eval(), (start, hidden, example_mask), output_dir / "decoder.onnx",
                input_names=["decoder_input_ids", "encoder_hidden_states", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes=({0: batch, 1: target}, {0: batch, 1: source}, {0: batch, 1: source}), **options,
            )  # fmt: skip
    finally:
        model.train(was_training)
    model.config.save_pretrained(output_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    logger.info("Exported encoder.onnx and decoder.onnx to %s", output_dir)
    return output_dir


def greedy_decode(onnx_dir, input_ids, attention_mask, max_new_tokens: int, *, providers=None):
    """Greedy decoding over the exported graphs with ONNX Runtime: the reference loop (no cache, see above).

    Args:
        onnx_dir: a folder written by `export_onnx`.
        input_ids, attention_mask: the source, as numpy arrays or tensors, (B, S).
        max_new_tokens: tokens to generate at most; a row stops at `</s>`, then holds `<pad>`.
        providers: ONNX Runtime execution providers (default: CPU).

    Returns the generated ids as a numpy array (B, <= 1 + max_new_tokens), starting with the decoder start token,
    as `model.generate(..., num_beams=1)` returns them.
    """
    import json

    import numpy as np
    import onnxruntime

    onnx_dir = Path(onnx_dir)
    config = json.loads((onnx_dir / "config.json").read_text())
    providers = providers or ["CPUExecutionProvider"]
    encoder = onnxruntime.InferenceSession(str(onnx_dir / "encoder.onnx"), providers=providers)
    decoder = onnxruntime.InferenceSession(str(onnx_dir / "decoder.onnx"), providers=providers)
    input_ids, attention_mask = (np.asarray(x, dtype=np.int64) for x in (input_ids, attention_mask))
    hidden = encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    generated = np.full((len(input_ids), 1), config["decoder_start_token_id"], dtype=np.int64)
    finished = np.zeros(len(input_ids), dtype=bool)
    for _ in range(max_new_tokens):
        logits = decoder.run(
            None, {"decoder_input_ids": generated, "encoder_hidden_states": hidden, "attention_mask": attention_mask}
        )[0]
        next_ids = np.where(finished, config["pad_token_id"], logits[:, -1].argmax(-1))
        generated = np.concatenate([generated, next_ids[:, None]], axis=1)
        finished |= next_ids == config["eos_token_id"]
        if finished.all():
            break
    return generated
