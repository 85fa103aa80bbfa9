"""Exact conversion between MarianMT (the OPUS-MT family) and vaswani, in both directions.

MarianMT is the paper's Transformer with a few different conventions; each becomes a config option here:

| MarianMT                                   | vaswani                                                        |
|--------------------------------------------|----------------------------------------------------------------|
| `activation_function` "swish" (OPUS-MT)    | "silu" (the same function)                                     |
| `final_logits_bias` buffer                 | `add_final_logits_bias=True`                                   |
| `decoder_start_token_id` = `<pad>`         | copied, like every special token id                            |
| `scale_embedding`                          | `scale_embedding`                                              |
| separate decoder vocabulary                | `share_encoder_decoder_embeddings=False`, `target_vocab_size`  |
| sinusoids laid out [sin... | cos...]       | the paper's interleaved [sin, cos, sin, cos, ...], see below   |

The sinusoid layout. MarianMT puts all sines in the first half of the model dimension and all cosines in the second;
the paper (Section 3.5) interleaves them. A fixed permutation of the model dimension maps one onto the other, and
permuting the model dimension is an exact symmetry of the network: every weight that reads the residual stream has
its input columns permuted, every weight or bias that writes it has its rows permuted, and LayerNorm, which only
takes the mean and variance over that dimension, has its gain and bias permuted. Attention heads, the feed-forward
inner dimension and the vocabulary are untouched. So the converted model *is* the paper's architecture, with no
layout option to carry around; only the order of floating-point sums changes (differences around 1e-7).
"""

import torch
from transformers import AutoConfig, GenerationConfig, MarianConfig, MarianMTModel

from vaswani.configuration import VaswaniConfig
from vaswani.modeling.compat_vaswani import without_hub_kernels
from vaswani.modeling.modeling_vaswani import VaswaniForConditionalGeneration, sinusoid_table

ACTIVATIONS_FROM_MARIAN = {"relu": "relu", "gelu": "gelu", "swish": "silu", "silu": "silu"}
POSITION_TOLERANCE = 1e-4  # a sinusoid table stored in fp32 next to ours; anything else is not sinusoidal

# Parameter names (after `model.encoder.layers.N.` / `model.decoder.layers.N.`): MarianMT's -> vaswani's.
LAYER_NAMES = {
    "self_attn_layer_norm": "self_attn_sublayer.layer_norm",
    "encoder_attn_layer_norm": "encoder_attn_sublayer.layer_norm",
    "final_layer_norm": "feed_forward_sublayer.layer_norm",
    "fc1": "feed_forward.fc1",
    "fc2": "feed_forward.fc2",
}
# How each parameter touches the model dimension: "in" reads the residual stream (permute columns), "out" writes it
# (permute rows; biases and LayerNorm vectors are all "out").
READS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "fc1.weight", "embed_tokens.weight", "shared.weight",
         "lm_head.weight")  # fmt: skip
WRITES = ("out_proj.weight", "out_proj.bias", "fc2.weight", "fc2.bias", "layer_norm.weight", "layer_norm.bias")


# Config fields with the same name and meaning in MarianConfig and VaswaniConfig, copied as they are both ways.
SHARED_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "decoder_attention_heads",
                 "encoder_ffn_dim", "decoder_ffn_dim", "dropout", "attention_dropout", "activation_dropout",
                 "scale_embedding", "tie_word_embeddings", "max_position_embeddings", "pad_token_id", "bos_token_id",
                 "eos_token_id", "decoder_start_token_id")  # fmt: skip


class MarianConversionError(ValueError):
    """The checkpoint is not MarianMT, or uses a MarianMT feature vaswani does not have."""


def model_dimension_permutation(d_model: int) -> torch.Tensor:
    """`perm` with vaswani[..., k] = marian[..., perm[k]]: vaswani's column 2i (sine of frequency i) is MarianMT's
    column i, and vaswani's column 2i+1 (cosine) is MarianMT's column d_model/2 + i."""
    half = torch.arange(d_model // 2)
    return torch.stack([half, half + d_model // 2], dim=1).reshape(-1)  # (d_model/2, 2) -> (d_model,)


def config_from_marian(marian: MarianConfig, embeddings_shared: bool = True) -> VaswaniConfig:
    """The `VaswaniConfig` of the same architecture as the MarianMT config `marian` (table in the module docstring).

    `embeddings_shared`: whether the encoder and decoder embeddings hold the same matrix. transformers 5 unties
    them in MarianMT whenever `tie_word_embeddings=False`, even with `share_encoder_decoder_embeddings=True`."""
    if getattr(marian, "model_type", None) != "marian":
        raise MarianConversionError(f"Expected a MarianMT config, got model_type {marian.model_type!r}.")
    activation = ACTIVATIONS_FROM_MARIAN.get(marian.activation_function)
    if activation is None:
        raise MarianConversionError(
            f"MarianMT `activation_function={marian.activation_function!r}` is not supported; vaswani has "
            f"{', '.join(sorted(ACTIVATIONS_FROM_MARIAN))}."
        )
    if marian.d_model % 2:
        raise MarianConversionError(f"An odd `d_model` ({marian.d_model}) has no sinusoid pairing; it must be even.")
    for name in ("encoder_layerdrop", "decoder_layerdrop"):
        if getattr(marian, name, 0.0):
            raise MarianConversionError(f"MarianMT `{name}={getattr(marian, name)}` (LayerDrop) is not supported.")
    share = marian.share_encoder_decoder_embeddings and embeddings_shared
    target_vocab = marian.decoder_vocab_size or marian.vocab_size
    return VaswaniConfig(
        vocab_size=marian.vocab_size,
        target_vocab_size=None if share else target_vocab,
        share_encoder_decoder_embeddings=share,
        activation_function=activation,
        init_std=marian.init_std,
        add_final_logits_bias=True,
        unk_token_id=None,
        **{name: getattr(marian, name) for name in SHARED_FIELDS},
    )


def marian_config_from(config: VaswaniConfig) -> MarianConfig:
    """The `MarianConfig` of the same architecture as the vaswani `config`. Raises a `MarianConversionError` naming
    the option for what MarianMT cannot express (`pre_layer_norm`, learned positions)."""
    unsupported = {
        "pre_layer_norm": config.pre_layer_norm,
        "position_embedding_type": config.position_embedding_type != "sinusoidal",
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise MarianConversionError(f"MarianMT has no equivalent of {', '.join(f'`{n}`' for n in named)} as set here.")
    if config.d_model % 2:
        raise MarianConversionError(f"An odd `d_model` ({config.d_model}) has no sinusoid pairing.")
    return MarianConfig(
        vocab_size=config.vocab_size,
        decoder_vocab_size=config.decoder_vocabulary,
        share_encoder_decoder_embeddings=config.share_encoder_decoder_embeddings,
        activation_function=config.activation_function,
        init_std=config.init_std if config.init_std is not None else 0.02,
        forced_eos_token_id=None,  # vaswani never forces EOS; MarianConfig's default (0) is one of our token ids
        **{name: getattr(config, name) for name in SHARED_FIELDS},
    )


def rename_from_marian(key: str) -> str:
    """MarianMT parameter name -> vaswani parameter name (the module tree is otherwise the same)."""
    for marian_name, vaswani_name in LAYER_NAMES.items():
        key = key.replace(f".{marian_name}.", f".{vaswani_name}.")
    return key


def permute(key: str, tensor: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Applies `perm` to the model dimension of one parameter; `perm` maps the source layout to the target's."""
    if key.endswith(READS):
        return tensor[:, perm]  # (out, d_model): input columns
    if key.endswith(WRITES):
        return tensor[perm]  # (d_model, in) or (d_model,): output rows
    return tensor


def check_positions(marian_state: dict, d_model: int) -> None:
    """MarianMT stores its position table; a converted model computes the paper's sinusoids instead, so the stored
    table must be exactly those, in MarianMT's layout."""
    perm = model_dimension_permutation(d_model)
    for stack in ("encoder", "decoder"):
        table = marian_state.get(f"model.{stack}.embed_positions.weight")
        if table is None:
            continue
        expected = sinusoid_table(table.shape[0], d_model).to(table.dtype)  # vaswani layout
        error = (table[:, perm] - expected).abs().max().item()
        if error > POSITION_TOLERANCE:
            raise MarianConversionError(
                f"`model.{stack}.embed_positions.weight` is not the sinusoid table (max difference {error:.2e}); "
                "vaswani computes sinusoidal positions and cannot carry a trained position table."
            )


def state_dict_from_marian(marian_state: dict, config: VaswaniConfig) -> dict:
    check_positions(marian_state, config.d_model)
    perm = model_dimension_permutation(config.d_model)
    converted = {}
    for key, tensor in marian_state.items():
        if key.endswith("embed_positions.weight"):
            continue  # computed, not stored (Section 3.5)
        if key == "model.shared.weight" and not config.share_encoder_decoder_embeddings:
            continue  # unused by MarianMT's forward once the stacks' embeddings are untied
        name = rename_from_marian(key)
        converted[name] = permute(name, tensor, perm).clone()
    return converted


def state_dict_to_marian(state: dict, config: VaswaniConfig) -> dict:
    inverse = torch.argsort(model_dimension_permutation(config.d_model))
    reverse_names = {v: k for k, v in LAYER_NAMES.items()}
    converted = {}
    for key, tensor in state.items():
        marian_key = key
        for vaswani_name, marian_name in reverse_names.items():
            marian_key = marian_key.replace(f".{vaswani_name}.", f".{marian_name}.")
        converted[marian_key] = permute(key, tensor, inverse).clone()
    if "final_logits_bias" not in converted:
        converted["final_logits_bias"] = torch.zeros(1, config.decoder_vocabulary)
    return converted


def load_marian(model_or_path, **kwargs) -> MarianMTModel:
    """`model_or_path`: a MarianMTModel object, returned as is, or a folder or Hub id, loaded with `kwargs` (for
    `MarianMTModel.from_pretrained`) after checking that its model type is "marian"."""
    if isinstance(model_or_path, MarianMTModel):
        return model_or_path
    if isinstance(model_or_path, torch.nn.Module):
        raise MarianConversionError(
            f"from_marian takes a MarianMTModel, a folder or a Hub id; got a {type(model_or_path).__name__}."
        )
    try:
        model_type = AutoConfig.from_pretrained(model_or_path, **kwargs).model_type
    except ValueError as error:  # an unknown model_type or custom code: not MarianMT either way
        raise MarianConversionError(f"{model_or_path} is not a MarianMT checkpoint: {error}") from error
    if model_type != "marian":
        raise MarianConversionError(f"{model_or_path} is a {model_type!r} checkpoint, not MarianMT ('marian').")
    # Hub kernels off unless asked for, as for vaswani's own models (transformers 5.25 turns them on by default).
    return MarianMTModel.from_pretrained(model_or_path, **without_hub_kernels(kwargs))


def from_marian(model_or_path, **kwargs) -> VaswaniForConditionalGeneration:
    """A vaswani model computing what the MarianMT model `model_or_path` (an object, a folder or a Hub id; `kwargs`
    go to `from_pretrained`) computes: the same logits to float rounding, the same generations. The stored
    position table must be the sinusoid, and the embeddings' sharing is read off the weights (module docstring)."""
    marian = load_marian(model_or_path, **kwargs)
    encoder, decoder = marian.get_encoder().embed_tokens.weight, marian.get_decoder().embed_tokens.weight
    shared = encoder.shape == decoder.shape and torch.equal(encoder, decoder)
    config = config_from_marian(marian.config, embeddings_shared=shared)
    state = state_dict_from_marian(marian.state_dict(), config)
    model = VaswaniForConditionalGeneration(config)
    expected = set(model.state_dict())
    unexpected = sorted(set(state) - expected)
    if unexpected:
        raise MarianConversionError(f"MarianMT parameters with no vaswani counterpart: {', '.join(unexpected)}.")
    model.load_state_dict(state, strict=True)
    model.generation_config = GenerationConfig.from_dict(marian.generation_config.to_dict())
    return model.to(dtype=next(marian.parameters()).dtype).train(marian.training)


def to_marian(model: VaswaniForConditionalGeneration) -> MarianMTModel:
    """A MarianMTModel computing what `model` computes, for the tools built for MarianMT."""
    config = marian_config_from(model.config)
    marian = MarianMTModel(config)
    state = state_dict_to_marian(model.state_dict(), model.config)
    for stack in ("encoder", "decoder"):  # MarianMT stores its table; it builds the same values itself
        key = f"model.{stack}.embed_positions.weight"
        state[key] = marian.state_dict()[key]
    marian.load_state_dict(state, strict=True)
    marian.generation_config = GenerationConfig.from_dict(model.generation_config.to_dict())
    return marian.to(dtype=next(model.parameters()).dtype).train(model.training)
