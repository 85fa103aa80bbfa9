"""vaswani -> CTranslate2, through CTranslate2's own model specification API.

Why not `model.to_marian()` and CTranslate2's Marian converter: that converter assumes OPUS-MT's layout, and vaswani's
is not it. It drops the last vocabulary entry unconditionally (OPUS-MT keeps `<pad>` there; vaswani keeps it at id
0, so the converted model loses a real token and fails with "vocabulary of size 7999"), and it starts the decoder
from a zero embedding where vaswani starts from `<s>` (Section 6.1 decodes from a start symbol), which moves every
log-probability by 1.0-1.5 nats. Describing the model to CTranslate2 directly (`TransformerSpec`: post-LN, ReLU,
sinusoidal positions, embeddings scaled by sqrt(d_model)) keeps the vocabulary and the start token as they are, so
that CTranslate2 computes the same log-probabilities (tests/test_serving.py checks 1e-3) and the same outputs.

    vaswani-convert-ctranslate2 runs/en-de/model runs/en-de/ct2 --quantization int8

    import ctranslate2
    translator = ctranslate2.Translator("runs/en-de/ct2")
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("The house is small.").input_ids)
    result = translator.translate_batch([tokens], beam_size=4, length_penalty=0.6)
    tokenizer.convert_tokens_to_string(result[0].hypotheses[0])

Needs the `ctranslate2` package (`pip install "vaswani[serve]"`). Part of the plugin, not of checkpoints.
"""

import math
from pathlib import Path

import torch

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")
ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "silu": "SWISH"}  # every `activation_function` vaswani has


class CTranslate2ConversionError(ValueError):
    """The model has a setting CTranslate2's Transformer cannot express; the message names it."""


def check_convertible(config) -> None:
    """Refuses, by name, what CTranslate2 would compute differently."""
    if config.activation_function not in ACTIVATIONS:
        raise CTranslate2ConversionError(
            f"`activation_function={config.activation_function!r}` has no CTranslate2 equivalent "
            f"(supported: {', '.join(ACTIVATIONS)})."
        )
    if config.encoder_attention_heads != config.decoder_attention_heads:
        raise CTranslate2ConversionError(
            f"`encoder_attention_heads={config.encoder_attention_heads}` and "
            f"`decoder_attention_heads={config.decoder_attention_heads}` differ: CTranslate2's Transformer has one "
            "head count for both stacks."
        )


def vocabulary(tokenizer_or_tokens, size: int) -> list[str]:
    """The token strings by id: from a tokenizer, or a list given as is. Must match the model's vocabulary size."""
    if isinstance(tokenizer_or_tokens, list | tuple):
        tokens = list(tokenizer_or_tokens)
    else:
        tokens = tokenizer_or_tokens.convert_ids_to_tokens(list(range(len(tokenizer_or_tokens))))
    if len(tokens) != size:
        raise CTranslate2ConversionError(
            f"The tokenizer has {len(tokens)} tokens but the model's vocabulary has {size}: convert with the "
            "tokenizer the model was trained with (or call `model.resize_token_embeddings(len(tokenizer))`)."
        )
    if len(set(tokens)) != len(tokens):
        raise CTranslate2ConversionError(
            "The vocabulary has repeated token strings; CTranslate2 maps tokens by string."
        )
    return tokens


def _linear(spec, module: torch.nn.Linear) -> None:
    spec.weight = module.weight.detach().float()  # (out, in), CTranslate2's layout too
    if module.bias is not None:
        spec.bias = module.bias.detach().float()


def _fused(spec, modules) -> None:
    """Several projections of the same input as one: CTranslate2 stores Q, K, V (or K, V) stacked by rows."""
    spec.weight = torch.cat([m.weight.detach().float() for m in modules])  # (k * out, in)
    spec.bias = torch.cat([m.bias.detach().float() for m in modules])


def _layer_norm(spec, module: torch.nn.LayerNorm) -> None:
    spec.gamma = module.weight.detach().float()
    spec.beta = module.bias.detach().float()


def _attention(spec, attention, self_attention: bool) -> None:
    if self_attention:
        _fused(spec.linear[0], [attention.q_proj, attention.k_proj, attention.v_proj])
    else:
        _linear(spec.linear[0], attention.q_proj)
        _fused(spec.linear[1], [attention.k_proj, attention.v_proj])
    _linear(spec.linear[-1], attention.out_proj)


def _positions(stack, num_positions: int) -> torch.Tensor:
    """The positional encodings, (P, d_model): vaswani's own table (interleaved sines and cosines, Section 3.5),
    not CTranslate2's built-in sinusoids, which concatenate them."""
    table = getattr(stack.embed_positions, "table", None)
    if table is None:  # learned positions (Table 3 row E)
        return stack.embed_positions.weight.detach().float()
    from .modeling_vaswani import sinusoid_table

    return sinusoid_table(num_positions, table.shape[1])


def _stack(spec, stack, config, num_positions: int) -> None:
    spec.scale_embeddings = math.sqrt(config.d_model) if config.scale_embedding else 1.0  # Section 3.4
    spec.position_encodings.encodings = _positions(stack, num_positions)
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = stack.embed_tokens.weight.detach().float()
    if stack.layer_norm is not None:  # pre-LN's final LayerNorm
        _layer_norm(spec.layer_norm, stack.layer_norm)


def model_spec(model, tokens: list[str], num_positions: int | None = None):
    """The `ctranslate2.specs.TransformerSpec` of a vaswani model, with its vocabulary and decoding tokens."""
    from ctranslate2.specs import common_spec, transformer_spec

    config = model.config
    check_convertible(config)
    num_positions = num_positions or config.max_position_embeddings
    spec = transformer_spec.TransformerSpec.from_config(
        (config.encoder_layers, config.decoder_layers),
        config.encoder_attention_heads,
        pre_norm=config.pre_layer_norm,  # the paper's post-LN by default (Section 3.1)
        activation=getattr(common_spec.Activation, ACTIVATIONS[config.activation_function]),
    )
    encoder, decoder = model.model.encoder, model.model.decoder
    _stack(spec.encoder, encoder, config, num_positions)
    for layer_spec, layer in zip(spec.encoder.layer, encoder.layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
        _layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_sublayer.layer_norm)
        _linear(layer_spec.ffn.linear_0, layer.feed_forward.fc1)
        _linear(layer_spec.ffn.linear_1, layer.feed_forward.fc2)
        _layer_norm(layer_spec.ffn.layer_norm, layer.feed_forward_sublayer.layer_norm)
    _stack(spec.decoder, decoder, config, num_positions)
    for layer_spec, layer in zip(spec.decoder.layer, decoder.layers, strict=True):
        _attention(layer_spec.self_attention, layer.self_attn, self_attention=True)
        _layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_sublayer.layer_norm)
        _attention(layer_spec.attention, layer.encoder_attn, self_attention=False)
        _layer_norm(layer_spec.attention.layer_norm, layer.encoder_attn_sublayer.layer_norm)
        _linear(layer_spec.ffn.linear_0, layer.feed_forward.fc1)
        _linear(layer_spec.ffn.linear_1, layer.feed_forward.fc2)
        _layer_norm(layer_spec.ffn.layer_norm, layer.feed_forward_sublayer.layer_norm)
    _linear(spec.decoder.projection, model.lm_head)
    if model.final_logits_bias is not None:
        spec.decoder.projection.bias = model.final_logits_bias.detach().float().reshape(-1)
    # One vocabulary for source and target (Section 5.1); MarianMT-style separate ones are not converted.
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    spec.config.layer_norm_epsilon = config.layer_norm_eps
    special = {name: tokens[getattr(config, f"{name}_id")] for name in ("bos_token", "eos_token", "unk_token")}
    for name, token in special.items():
        setattr(spec.config, name, token)
    spec.config.decoder_start_token = tokens[config.decoder_start_token_id]  # `<s>`, as vaswani's generate
    return spec


def convert_to_ctranslate2(model_or_path, output_dir, *, tokenizer=None, quantization: str | None = None,
                           force: bool = False) -> Path:  # fmt: skip
    """Writes a CTranslate2 model of a vaswani model into `output_dir` and returns the folder.

    Args:
        model_or_path: a `VaswaniForConditionalGeneration`, or a checkpoint folder / Hub id (its tokenizer is
            loaded from the same place when `tokenizer` is None).
        output_dir: the CTranslate2 model folder to write (`model.bin`, `config.json`, `shared_vocabulary.json`).
        tokenizer: the model's tokenizer (or the list of token strings by id); required with a model object.
        quantization: CTranslate2's weight type (`int8`, `int8_float32`, `float16`, ...; None keeps float32). It
            can also be chosen at load time (`ctranslate2.Translator(path, compute_type="int8")`).
        force: overwrite an existing `output_dir`.

    Raises `CTranslate2ConversionError` for a setting CTranslate2 cannot express (separate source and target
    vocabularies, unequal head counts, an unsupported activation), and `ImportError` without `ctranslate2`.
    """
    try:
        import ctranslate2  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Converting to CTranslate2 needs the `ctranslate2` package: `pip install 'vaswani[serve]'`."
        ) from error
    from ctranslate2.converters.converter import Converter

    if quantization is not None and quantization not in QUANTIZATIONS:
        raise CTranslate2ConversionError(f"Unknown quantization {quantization!r}; choose one of {QUANTIZATIONS}.")
    model = model_or_path
    if isinstance(model_or_path, str | Path):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        model = AutoModelForSeq2SeqLM.from_pretrained(model_or_path)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(model_or_path)
    if getattr(model.config, "model_type", None) != "vaswani":
        raise CTranslate2ConversionError(
            f"Expected a vaswani model, got model_type {getattr(model.config, 'model_type', None)!r}; for MarianMT "
            "use CTranslate2's own `ct2-transformers-converter`."
        )
    if not model.config.share_encoder_decoder_embeddings:
        raise CTranslate2ConversionError(
            "`share_encoder_decoder_embeddings=False` (separate source and target vocabularies) is not converted: "
            "export with `model.to_marian()` and CTranslate2's `ct2-transformers-converter` instead."
        )
    if tokenizer is None:
        raise CTranslate2ConversionError("Pass the model's `tokenizer`: CTranslate2 stores the vocabulary as strings.")
    tokens = vocabulary(tokenizer, model.config.vocab_size)
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()) and not force:
        raise FileExistsError(f"{output_dir} exists and is not empty: choose another folder, or pass force=True.")

    class VaswaniConverter(Converter):
        def _load(self):
            with torch.no_grad():
                return model_spec(model, tokens)

    VaswaniConverter().convert(str(output_dir), quantization=quantization, force=True)
    if hasattr(tokenizer, "save_pretrained"):  # not a plain list of tokens
        tokenizer.save_pretrained(output_dir / "tokenizer")  # the same tokenization as the model's
    return output_dir
