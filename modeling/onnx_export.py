"""vaswani -> ONNX, with torch's own exporter (`torch.onnx.export(..., dynamo=True)`), in optimum's seq2seq layout.

Three graphs, the split optimum makes (`ORTModelForSeq2SeqLM` in `onnxruntime_vaswani.py` runs them):

    encoder_model.onnx            input_ids (B, S), attention_mask (B, S)            -> last_hidden_state (B, S, d_model)
    decoder_model.onnx            input_ids (B, T), encoder_hidden_states (B, S, d_model), encoder_attention_mask (B, S)
                                  -> logits (B, T, V), present.{i}.decoder.key/value (B, h, T, d_k),
                                     present.{i}.encoder.key/value (B, h, S, d_k)
    decoder_with_past_model.onnx  input_ids (B, 1), encoder_attention_mask (B, S), past_key_values.{i}.decoder.key/value
                                  (B, h, P, d_k), past_key_values.{i}.encoder.key/value (B, h, S, d_k)
                                  -> logits (B, 1, V), present.{i}.decoder.key/value (B, h, P + 1, d_k)

The first decoder computes the encoder-decoder attention's keys and values once per sentence (Section 3.2.3); the
decoder with past takes them back unchanged at every later step, with the self-attention's past, so a step costs one
position's work. Batch, source, target and past lengths are dynamic up to the positions the export covers
(`max_positions`, by default the config's `max_position_embeddings`: the sinusoid table is a constant of the graph).
`quantize="int8"` runs ONNX Runtime's dynamic int8 quantization over the graphs (weights int8, activations quantized
per call): the int8 route that depends neither on `torch.ao.quantization` nor on quantized tensors, both deprecated.

    vaswani-export-onnx runs/en-de/model runs/en-de/onnx [--quantize int8]

Needs `onnx`, `onnxscript` and, to run, `onnxruntime` (`pip install "vaswani[serve]"`). Part of the plugin.
"""

import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

logger = logging.getLogger(__name__)

SUPPORTED_ATTENTION = ("eager", "sdpa")


QUANTIZATIONS = ("int8",)


class OnnxExportError(ValueError):
    """The model has a setting the ONNX export does not support; the message names it."""


def past_names(prefix: str, layers: int, attentions=("decoder", "encoder")) -> list[str]:
    """optimum's names of the past (`prefix` "past_key_values") or present ("present") tensors, layer by layer:
    `{prefix}.{i}.decoder.key`, `.decoder.value` (self-attention), `.encoder.key`, `.encoder.value` (cross)."""
    return [f"{prefix}.{i}.{attention}.{kv}" for i in range(layers) for attention in attentions for kv in ("key", "value")]


class EncoderGraph(nn.Module):
    """The encoder stack (Section 3.1) as one graph."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, d_model)


class DecoderGraph(nn.Module):
    """The decoder stack and the output projection (Section 3.4) over a target prefix with no past, returning the
    logits and both attentions' keys and values for the next step."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_hidden_states, encoder_attention_mask):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        outputs = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=input_ids, cache=cache, use_cache=True)  # fmt: skip
        present = []
        for own, cross in zip(cache.self_attention_cache.layers, cache.cross_attention_cache.layers, strict=True):
            present += [own.keys, own.values, cross.keys, cross.values]  # (B, h, T or S, d_k) each
        return outputs.logits, *present  # logits (B, T, V)


class DecoderWithPastGraph(nn.Module):
    """One decoding step: the new token against the past of both attentions; returns its logits and the
    self-attention's keys and values with the new position appended."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.d_model = model.config.d_model

    def forward(self, input_ids, encoder_attention_mask, *past):
        own, cross = DynamicCache(), DynamicCache()
        for i in range(len(past) // 4):
            own.update(past[4 * i], past[4 * i + 1], i)  # (B, h, P, d_k)
            cross.update(past[4 * i + 2], past[4 * i + 3], i)  # (B, h, S, d_k)
        cache = EncoderDecoderCache(own, cross)  # cross-attention marked computed: its projections are skipped
        # The encoder's output is read only for its shape (the cross mask): its keys and values are in the past.
        B, S = encoder_attention_mask.shape
        shape_only = past[2].new_zeros(B, S, self.d_model)  # (B, S, d_model)
        outputs = self.model(encoder_outputs=(shape_only,), attention_mask=encoder_attention_mask,
                             decoder_input_ids=input_ids, cache=cache, use_cache=True)  # fmt: skip
        present = []
        for layer in cache.self_attention_cache.layers:
            present += [layer.keys, layer.values]  # (B, h, P + 1, d_k)
        return outputs.logits, *present  # logits (B, 1, V)


def check_exportable(model) -> None:
    if getattr(model.config, "model_type", None) != "vaswani":
        raise OnnxExportError(f"Expected a vaswani model, got model_type {model.config.model_type!r}.")
    attention = model.config._attn_implementation
    if attention not in SUPPORTED_ATTENTION:
        raise OnnxExportError(
            f"`attn_implementation={attention!r}` does not export to ONNX: load the model with "
            f'`attn_implementation="sdpa"` (or "eager") for the export.'
        )


def cover_positions(model, max_positions: int | None) -> int:
    """The positions the graphs will cover: the table of sinusoids (or learned positions) is a constant of each
    graph, so a longer output needs a longer table at export time."""
    positions = max_positions or model.config.max_position_embeddings
    if positions < 2:
        raise OnnxExportError(f"`max_positions` is {positions}: the graphs need at least 2 positions.")
    for stack in (model.model.encoder, model.model.decoder):
        try:
            stack.embed_positions.cover_positions(positions)
        except ValueError as error:  # learned positions stop at their table
            raise OnnxExportError(f"`max_positions={positions}` is more than this model has: {error}") from None
    return positions


def load_for_export(model_or_path, tokenizer, **hub):
    """A model object as it is; a folder or Hub id loaded with SDPA attention, with its tokenizer where it has one."""
    if not isinstance(model_or_path, str | Path):
        return model_or_path, tokenizer
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(model_or_path, attn_implementation="sdpa", **hub)
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_or_path, **hub)
        except (OSError, ValueError):
            logger.warning("%s has no tokenizer: the export holds none; save one beside it.", model_or_path)
    return model, tokenizer


def export_onnx(model_or_path, output_dir, *, tokenizer=None, opset_version: int | None = None,
                quantize: str | None = None, max_positions: int | None = None, **hub) -> Path:  # fmt: skip
    """Writes the three graphs of a vaswani model in optimum's layout (module docstring), with its config,
    generation config, `ort_config.json` (what was exported) and, where given or found, its tokenizer, into
    `output_dir`; returns the folder. `ORTModelForSeq2SeqLM.from_pretrained(output_dir)` runs it.

    Args:
        model_or_path: a `VaswaniForConditionalGeneration`, or a checkpoint folder / Hub id (its tokenizer is then
            saved beside the graphs too).
        output_dir: the folder to write.
        tokenizer: the model's tokenizer, saved beside the graphs (optional with a model object).
        opset_version: the ONNX opset (default: torch's exporter's own).
        quantize: None (float32) or "int8" (ONNX Runtime's dynamic quantization of every graph).
        max_positions: the positions the graphs cover (default: `max_position_embeddings`); a longer source or
            output is refused by `ORTModelForSeq2SeqLM` before any work.
        hub: `revision`, `token`, `local_files_only`, `trust_remote_code` for a Hub id.

    Raises `OnnxExportError` for a setting that does not export (flash or flex attention, an unknown quantization,
    positions past a learned table), and `ImportError` without `onnx` / `onnxscript` (or `onnxruntime` to quantize).
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "ONNX export needs the `onnx` and `onnxscript` packages: `pip install 'vaswani[serve]'`."
        ) from error
    if quantize not in (None, *QUANTIZATIONS):
        raise OnnxExportError(f"Unknown quantization {quantize!r}: use one of {QUANTIZATIONS}, or None for float32.")
    model, tokenizer = load_for_export(model_or_path, tokenizer, **hub)
    check_exportable(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    was_training, attention = model.training, model.config._attn_implementation
    model.eval()
    try:
        positions = cover_positions(model, max_positions)
        # The graphs get the paper's formula (eager attention), not SDPA: torch's exporter decomposes SDPA into a
        # transposed and scaled copy of the keys, which ONNX Runtime materialised at every step for the whole past
        # (44% of its time at beam 4, batch 32); from the formula's Q K^T it fuses the transpose into its MatMul.
        model.set_attn_implementation("eager")
        with torch.no_grad(), quiet_exporter():
            export_graphs(model, output_dir, positions, opset_version)
    finally:
        model.set_attn_implementation(attention)
        model.train(was_training)
    if quantize == "int8":
        quantize_int8(output_dir)
    model.config.save_pretrained(output_dir)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    import vaswani

    record = {"vaswani_version": vaswani.__version__, "torch_version": torch.__version__,
              "max_positions": positions, "opset": opset_version, "quantization": quantize}  # fmt: skip
    (output_dir / "ort_config.json").write_text(json.dumps(record, indent=2) + "\n")
    logger.info("Exported %s to %s", ", ".join(GRAPH_FILES), output_dir)
    return output_dir


@contextlib.contextmanager
def quiet_exporter():
    """torch's exporter without the messages that say nothing about this export: that torchvision's operators are
    not registered (vaswani has none), the graph optimizer's account of each rewrite (onnxscript, onnx_ir), that
    pytree's LeafSpec is deprecated, and that two dynamic axes share a name (the batch of two inputs is one batch)."""
    levels = {"torch.onnx._internal.exporter._registration": logging.ERROR, "onnxscript": logging.WARNING,
              "onnx_ir": logging.WARNING}  # fmt: skip
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


GRAPH_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")


def export_graphs(model, output_dir: Path, positions: int, opset_version: int | None) -> None:
    """Traces the three graphs on small example inputs, every size dynamic (module docstring)."""
    config = model.config
    layers = config.decoder_layers
    batch = torch.export.Dim("batch", max=4096)
    source = torch.export.Dim("source", max=positions)
    target = torch.export.Dim("target", max=positions)
    past = torch.export.Dim("past", max=positions - 1)
    ids = torch.ones((2, 5), dtype=torch.long, device=model.device)  # any token: the values do not shape the graph
    mask = torch.ones_like(ids)
    prefix = torch.full((2, 3), config.decoder_start_token_id, dtype=torch.long, device=model.device)
    options = dict(dynamo=True, opset_version=opset_version, external_data=False, verbose=False)
    encoder = EncoderGraph(model).eval()
    hidden = encoder(ids, mask)  # (2, 5, d_model)
    torch.onnx.export(
        encoder, (ids, mask), output_dir / GRAPH_FILES[0],
        input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
        dynamic_shapes=({0: batch, 1: source}, {0: batch, 1: source}), **options,
    )  # fmt: skip
    decoder = DecoderGraph(model).eval()
    _, *present = decoder(prefix, hidden, mask)
    torch.onnx.export(
        decoder, (prefix, hidden, mask), output_dir / GRAPH_FILES[1],
        input_names=["input_ids", "encoder_hidden_states", "encoder_attention_mask"],
        output_names=["logits", *past_names("present", layers)],
        dynamic_shapes=({0: batch, 1: target}, {0: batch, 1: source}, {0: batch, 1: source}), **options,
    )  # fmt: skip
    past_shapes = tuple(({0: batch, 2: past}, {0: batch, 2: past}, {0: batch, 2: source}, {0: batch, 2: source})
                        [j] for _ in range(layers) for j in range(4))  # fmt: skip
    new_token = prefix[:, :1]  # (2, 1): optimum's decoder with past takes one token a step
    torch.onnx.export(
        DecoderWithPastGraph(model).eval(), (new_token, mask, *present), output_dir / GRAPH_FILES[2],
        input_names=["input_ids", "encoder_attention_mask", *past_names("past_key_values", layers)],
        output_names=["logits", *past_names("present", layers, ("decoder",))],
        dynamic_shapes=({0: batch}, {0: batch, 1: source}, past_shapes), **options,
    )  # fmt: skip


def quantized_copy(folder: Path, destination: Path) -> Path:
    """A copy of the float32 export in `folder` at `destination`, its graphs quantized to int8 and its
    `ort_config.json` saying so: the int8 export of the same model without exporting it again."""
    shutil.copytree(folder, destination)
    quantize_int8(destination)
    record_path = destination / "ort_config.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "quantization": "int8"}, indent=2) + "\n")
    return destination


def quantize_int8(output_dir: Path) -> None:
    """ONNX Runtime's dynamic quantization of each graph in place: int8 weights, activations quantized per call."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise ImportError("int8 quantization needs ONNX Runtime: `pip install 'vaswani[serve]'`.") from error
    root = logging.getLogger()  # the quantizer logs every tensor it leaves alone on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        for name in GRAPH_FILES:
            path = output_dir / name
            quantized = path.with_suffix(".int8.onnx")
            quantize_dynamic(path, quantized, weight_type=QuantType.QInt8)
            quantized.replace(path)
    finally:
        root.setLevel(level)
