"""Configuration of the Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

The defaults are the paper's base model (Table 3, row "base"). Field names follow BART/Marian so that users of those
models feel at home; every deviation from the paper is a named option that is off by default.

This file must import nothing from the `vaswani` package: it is copied flat into every checkpoint so that
`AutoConfig.from_pretrained(..., trust_remote_code=True)` works where `vaswani` is not installed.
"""

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig

ACTIVATIONS = ("relu", "gelu", "silu")
POSITION_EMBEDDING_TYPES = ("sinusoidal", "learned")

# Table 3 of the paper, as data. Every preset is complete: a preset never inherits from another.
# `tiny` and `small` are not in the paper: `tiny` is for tests and demos, `small` is the size the project's
# reference figures use (a 2-core CPU trains it in minutes).
PRESETS: dict[str, dict[str, int | float]] = {
    "base": {
        "d_model": 512, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 8,
        "decoder_attention_heads": 8, "encoder_ffn_dim": 2048, "decoder_ffn_dim": 2048, "dropout": 0.1,
    },
    "big": {
        "d_model": 1024, "encoder_layers": 6, "decoder_layers": 6, "encoder_attention_heads": 16,
        "decoder_attention_heads": 16, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096, "dropout": 0.3,
    },
    "small": {
        "d_model": 256, "encoder_layers": 3, "decoder_layers": 3, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 1024, "decoder_ffn_dim": 1024, "dropout": 0.1,
    },
    "tiny": {
        "d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 4,
        "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "dropout": 0.1,
        "vocab_size": 128, "max_position_embeddings": 256,
    },
}  # fmt: skip


@strict
class VaswaniConfig(PretrainedConfig):
    r"""Configuration of every vaswani model: the encoder-decoder ([`VaswaniModel`],
    [`VaswaniForConditionalGeneration`]), the encoder alone ([`VaswaniEncoderModel`], [`VaswaniForMaskedLM`],
    [`VaswaniForSequenceClassification`], [`VaswaniForTokenClassification`]: the `encoder_*` fields) and the decoder
    alone ([`VaswaniForCausalLM`]: the `decoder_*` fields). One config, one set of presets, for all three shapes.

    Defaults give the paper's base model. `VaswaniConfig.from_preset("big")` gives another row of Table 3.

    Args:
        vocab_size: size of the joint source/target vocabulary (the paper's shared BPE has about 37,000 tokens).
        d_model: model width (Section 3). Must be divisible by the numbers of heads.
        encoder_layers / decoder_layers: N, the number of identical layers in each stack (Section 3.1).
        encoder_attention_heads / decoder_attention_heads: h, the number of attention heads (Section 3.2.2).
        encoder_ffn_dim / decoder_ffn_dim: d_ff, the inner width of the position-wise feed-forward network (Section 3.3).
        dropout: P_drop, applied to each sub-layer output and to the sums of embeddings and positions (Section 5.4).
        attention_dropout: dropout on the attention probabilities. Not in the paper (0.0).
        activation_dropout: dropout inside the feed-forward network. Not in the paper (0.0).
        activation_function: "relu" as in the paper (Section 3.3); "gelu" or "silu" are deviations.
        scale_embedding: multiply the embeddings by sqrt(d_model) (Section 3.4).
        tie_word_embeddings: share the embedding matrix with the pre-softmax projection (Section 3.4). False
            gives an untied output projection, a deviation.
        pre_layer_norm: False is the paper's post-LN, `LayerNorm(x + Dropout(Sublayer(x)))` (Sections 3.1, 5.4).
            True gives `x + Dropout(Sublayer(LayerNorm(x)))` with a final LayerNorm after each stack, a deviation.
        position_embedding_type: "sinusoidal" as in Section 3.5 (works for any length); "learned" is the
            alternative of Table 3 row (E), limited to `max_position_embeddings` positions.
        max_position_embeddings: size of the learned position table, or of the precomputed sinusoid table
            (sinusoidal positions beyond it are computed on the fly, so it is not a limit then).
        layer_norm_eps: epsilon of every LayerNorm.
        share_encoder_decoder_embeddings: True (the paper, Section 3.4): one embedding matrix for source and target.
            False gives separate encoder and decoder embeddings, MarianMT's convention for separate vocabularies.
        target_vocab_size: size of the decoder's vocabulary when it differs from `vocab_size` (MarianMT's
            `decoder_vocab_size`; needs `share_encoder_decoder_embeddings=False`). None means `vocab_size`. (Not named
            `decoder_...`: transformers maps every `decoder_*` field onto the decoder's text config.)
        add_final_logits_bias: add a fixed bias vector to the output logits, MarianMT's `final_logits_bias` (used by
            converted checkpoints). Not in the paper (False).
        init_std: the paper does not state its initialisation. A number: N(0, init_std) for every projection and
            embedding (0.02, as BART/Marian; it trains faster early on). None: Xavier-uniform projections and
            N(0, d_model^-0.5) embeddings, as the tensor2tensor reference code.
        use_cache: return the decoder's key/value cache from `forward` while decoding (transformers' meaning).
        is_encoder_decoder: True for the encoder-decoder (the default); the encoder-only and decoder-only models
            keep a copy of the config with False (transformers' generate, Trainer and pipelines read it).
        num_labels / id2label / label2id / problem_type: transformers' own, for the classification heads.
        pad_token_id / bos_token_id / eos_token_id / unk_token_id: the special ids of `VaswaniTokenizer`: `<pad>` 0,
            `<s>` 1, `</s>` 2, `<unk>` 3. Padding positions get no attention and no loss.
        decoder_start_token_id: the first decoder input, `<s>` (1). MarianMT starts from `<pad>`; converted
            checkpoints keep that.

    Any other keyword is one of transformers' `PretrainedConfig` (for example `attn_implementation`). Bad values
    are refused at construction with a ValueError that names the field and what to do.
    """

    model_type = "vaswani"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]  # the cache, named `cache` from transformers 5.24
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
    }

    vocab_size: int = 37000
    d_model: int = 512
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 2048
    decoder_ffn_dim: int = 2048
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    activation_dropout: float | int = 0.0
    activation_function: str = "relu"
    scale_embedding: bool = True
    tie_word_embeddings: bool = True
    pre_layer_norm: bool = False
    position_embedding_type: str = "sinusoidal"
    max_position_embeddings: int = 1024
    layer_norm_eps: float = 1e-5
    init_std: float | None = 0.02
    share_encoder_decoder_embeddings: bool = True
    target_vocab_size: int | None = None
    add_final_logits_bias: bool = False
    use_cache: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    unk_token_id: int | None = 3
    decoder_start_token_id: int | None = 1

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "VaswaniConfig":
        """A config for a named row of Table 3 (`base`, `big`) or a project preset (`small`, `tiny`).

        `overrides` replace preset values or set other fields, e.g. `from_preset("tiny", vocab_size=len(tok))`.
        An unknown `name` raises a ValueError listing the presets."""
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Choose one of: {', '.join(sorted(PRESETS))}.")
        return cls(**{**PRESETS[name], **overrides})

    @property
    def decoder_vocabulary(self) -> int:
        """The decoder's vocabulary size: of its embedding and of the output logits."""
        return self.vocab_size if self.target_vocab_size is None else self.target_vocab_size

    def validate_architecture(self):
        """Part of `@strict` validation: runs at construction and names the field and the fix."""
        sizes = (
            "vocab_size",
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "max_position_embeddings",
        )
        for name in sizes:
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            heads = getattr(self, name)
            if self.d_model % heads != 0:
                raise ValueError(
                    f"`d_model` ({self.d_model}) must be divisible by `{name}` ({heads}): each head gets "
                    f"d_k = d_model / h dimensions (Section 3.2.2). Change `d_model` or `{name}`."
                )
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(
                f"Unknown `activation_function` {self.activation_function!r}. Choose one of: {', '.join(ACTIVATIONS)}."
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(
                f"Unknown `position_embedding_type` {self.position_embedding_type!r}. "
                f"Choose one of: {', '.join(POSITION_EMBEDDING_TYPES)}."
            )
        if self.target_vocab_size is not None and self.target_vocab_size <= 0:
            raise ValueError(f"`target_vocab_size` must be a positive integer or None, got {self.target_vocab_size}.")
        if self.share_encoder_decoder_embeddings and self.decoder_vocabulary != self.vocab_size:
            raise ValueError(
                f"`target_vocab_size` ({self.target_vocab_size}) differs from `vocab_size` ({self.vocab_size}), so "
                "source and target cannot share one embedding matrix: set `share_encoder_decoder_embeddings=False`."
            )
        if self.layer_norm_eps <= 0:
            raise ValueError(f"`layer_norm_eps` must be positive, got {self.layer_norm_eps}.")
        if self.init_std is not None and self.init_std <= 0:
            raise ValueError(f"`init_std` must be positive or None, got {self.init_std}.")


__all__ = ["PRESETS", "VaswaniConfig"]
