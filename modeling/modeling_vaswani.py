"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017) as a Hugging Face transformers model.

Section numbers in comments refer to the paper (arXiv:1706.03762v7). Shape letters used throughout:
    B  batch size                 S  source length             T  target (query) length
    L  key/value length           h  attention heads           d_k  per-head width, d_model / h
    d_model  model width          d_ff  feed-forward width     V  vocabulary size

This file is copied flat into every checkpoint beside `configuration_vaswani.py`, so that
`from_pretrained(..., trust_remote_code=True)` works where `vaswani` is not installed. It therefore imports only
torch, transformers and that one sibling file.
"""

import copy
import math
from collections.abc import Callable
from functools import partial
from typing import Unpack

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPast,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import can_return_tuple, is_torchdynamo_compiling, logging
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

# Checkpoint plumbing that is not the paper (atomic saves, the code files and pipelines a checkpoint carries, the Hub's
# model card): a sibling file, carried into every checkpoint like the others.
from .checkpoint_vaswani import (
    DamagedWeightsError,
    push_with_model_card,
    save_with_code,
    translation_pipelines,
)

# Where transformers releases differ (the cache's name, since 5.24): one sibling file, in the package and in every
# checkpoint alike, so that this file reads the same on every supported release.
from .compat_vaswani import (
    ENCODER_KWARGS,
    TransformersKwargs,
    accepts_past_key_values,
    cache_of,
    causal_mask,
    cpu_lacks_bf16,
    reject_unknown_kwargs,
    with_cache,
    without_hub_kernels,
)

# The fused training loss and attention's precision on a CPU: a sibling file, so that this one reads as the paper.
from .kernels_vaswani import cross_entropy, in_float32_on_cpu

try:  # a checkpoint folder (remote code): the config file sits beside this one
    from .configuration_vaswani import VaswaniConfig
except ImportError:  # the installed package: vaswani/modeling/ and vaswani/configuration/
    from vaswani.configuration.configuration_vaswani import VaswaniConfig

logger = logging.get_logger(__name__)

# The paper's decoding (Section 6.1): beam 4, length penalty alpha 0.6, output length at most input length + 50.
# Not the default of a model built from a config, which decodes greedily as transformers' models do (its tools
# assume it: compiled decoding with a static cache is greedy); `paper_generation_config` gives it, and the training
# job stores it in the checkpoints it saves. The output bound is `generate`'s default whatever the config.
PAPER_GENERATION_DEFAULTS = {"num_beams": 4, "length_penalty": 0.6}
MAX_OUTPUT_LENGTH_OFFSET = 50


def paper_generation_config(base: GenerationConfig | None = None) -> GenerationConfig:
    """The paper's decoding (Section 6.1) as a `GenerationConfig`: beam 4, length penalty 0.6 (the output bound,
    input length + 50, is `generate`'s own default).

    - For one call: `model.generate(**batch, generation_config=paper_generation_config())`; the model's generation
      config fills in the rest (token ids).
    - For good: `model.generation_config = paper_generation_config(model.generation_config)` before
      `save_pretrained`, so that the checkpoint's `generation_config.json` carries it (what the training job does).

    `base`: a generation config to copy (left unchanged) with the paper's settings on it; None gives them alone."""
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    config.update(**PAPER_GENERATION_DEFAULTS)
    return config


# ----------------------------------------------------------------------------------------------------------------
# Input checks: bad input gets a clear error before torch sees it.
# ----------------------------------------------------------------------------------------------------------------
def check_input_ids(input_ids: torch.Tensor, vocab_size: int, name: str = "input_ids") -> None:
    if input_ids.dim() != 2:
        raise ValueError(f"`{name}` must have shape (batch_size, sequence_length), got {tuple(input_ids.shape)}.")
    if input_ids.shape[1] == 0:
        raise ValueError(f"`{name}` holds empty sequences (length 0): every sequence needs at least one token.")
    if input_ids.dtype.is_floating_point:
        raise ValueError(f"`{name}` must hold integer token ids, got dtype {input_ids.dtype}.")
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"`{name}` contains token id {bad}, outside the vocabulary [0, {vocab_size}). Encode with the model's "
            "own tokenizer, or call `model.resize_token_embeddings(len(tokenizer))` after adding tokens."
        )


def check_labels(labels: torch.Tensor, vocab_size: int) -> None:
    """Targets are token ids of the decoder's vocabulary, or -100 where no loss is wanted."""
    bad = labels[(labels != -100) & ((labels < 0) | (labels >= vocab_size))]
    if bad.numel():
        raise ValueError(
            f"`labels` contains {bad[0].item()}, outside the vocabulary [0, {vocab_size}) and not -100 (the ignore "
            "index). Encode targets with the model's tokenizer; mark padding with -100."
        )


def check_label_smoothing(epsilon) -> float:
    """Label smoothing's epsilon (Section 5.4): a number from 0 (none) up to, not including, 1."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 <= epsilon < 1:
        raise ValueError(
            f"`label_smoothing` is {epsilon!r}: give the share of the target probability spread over the vocabulary, "
            "a number from 0 (no smoothing) up to 1, e.g. 0.1 as in the paper."
        )
    return float(epsilon)


def check_attention_mask(attention_mask: torch.Tensor | None, shape: torch.Size, name: str) -> None:
    if attention_mask is None or attention_mask.dim() != 2:  # 4D masks are taken as prepared by the caller
        return
    if attention_mask.shape != shape:
        raise ValueError(
            f"`{name}` has shape {tuple(attention_mask.shape)} but the token ids have shape {tuple(shape)}: "
            "pass the mask the tokenizer returned with these ids."
        )


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the labels shifted one step right, starting with the start token."""
    shifted = labels.new_empty(labels.shape)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill_(shifted == -100, pad_token_id)  # -100 marks ignored labels, not tokens


# ----------------------------------------------------------------------------------------------------------------
# Positional encoding (Section 3.5)
# ----------------------------------------------------------------------------------------------------------------
def sinusoid_table(num_positions: int, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)). Section 3.5.

    Returns the table for positions 0 .. `num_positions` - 1 as (num_positions, d_model): sines in the even columns,
    cosines in the odd ones. Computed in float64 so that large positions keep their precision; returned as float32.
    """
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d_model/2),)
    angle = position / torch.pow(10000.0, two_i / d_model)  # (P, ceil(d_model/2))
    table = torch.empty(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoids, defined for every position: lengths beyond the precomputed table are computed on the fly,
    which is the paper's argument for extrapolating to longer sequences than seen in training (Section 3.5)."""

    def __init__(self, num_positions: int, d_model: int):
        super().__init__()
        self.d_model = d_model
        # Not persistent: it is a function of the config, rebuilt by `_init_weights` after loading.
        self.register_buffer("table", sinusoid_table(num_positions, d_model), persistent=False)

    def forward(
        self, past_length: int | torch.Tensor, length: int, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if position_ids is not None:  # (B, T): each row's own positions (a left-padded prompt starts at its first token)
            if not is_torchdynamo_compiling():
                self.cover_positions(int(position_ids.max()) + 1)
            return self.table[position_ids]  # (B, T, d_model)
        if is_torchdynamo_compiling():
            # Traced, the past length is a tensor (a static cache's count) or a symbolic size (an exported graph's
            # dynamic past): index the table with it, so that one graph serves every length. `generate` made the
            # table long enough before compiling (`cover_positions`); an export covers the table it was given.
            return self.table[torch.arange(length, device=self.table.device) + past_length]  # (length, d_model)
        end = int(past_length) + length
        if end > self.table.shape[0]:
            return sinusoid_table(end, self.d_model).to(self.table)[end - length : end]
        return self.table[end - length : end]  # (length, d_model)

    def cover_positions(self, num_positions: int) -> None:
        """Extends the precomputed table to `num_positions` (compiled decoding cannot compute it on the fly)."""
        if num_positions > self.table.shape[0]:
            self.table = sinusoid_table(num_positions, self.d_model).to(self.table)


class LearnedPositionalEmbedding(nn.Embedding):
    """Learned positions, Table 3 row (E): a deviation, limited to `max_position_embeddings` positions."""

    def forward(
        self, past_length: int | torch.Tensor, length: int, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if position_ids is not None:  # (B, T): each row's own positions
            if not is_torchdynamo_compiling():
                self.cover_positions(int(position_ids.max()) + 1)
            return self.weight[position_ids]  # (B, T, d_model)
        if is_torchdynamo_compiling():
            # A static cache's tensor count or an export's symbolic size; `generate` checked the length before
            # compiling (`cover_positions`).
            return self.weight[torch.arange(length, device=self.weight.device) + past_length]  # (length, d_model)
        end = int(past_length) + length
        self.cover_positions(end)
        return self.weight[end - length : end]  # (length, d_model)

    def cover_positions(self, num_positions: int) -> None:
        """Refuses a length past the table: learned positions exist only up to `max_position_embeddings`."""
        if num_positions > self.num_embeddings:
            raise ValueError(
                f"Sequence needs position {num_positions - 1} but learned positions stop at {self.num_embeddings - 1} "
                "(`max_position_embeddings`). Truncate the input (tokenizer `truncation=True`), bound the output "
                "(`max_new_tokens`), or use `position_embedding_type='sinusoidal'`, which has no length limit."
            )


def positional_encoding(config: VaswaniConfig) -> nn.Module:
    if config.position_embedding_type == "learned":
        return LearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
    return SinusoidalPositionalEncoding(config.max_position_embeddings, config.d_model)


# ----------------------------------------------------------------------------------------------------------------
# Attention (Section 3.2)
# ----------------------------------------------------------------------------------------------------------------
def scaled_dot_product_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V, equation (1), Section 3.2.1.

    The eager member of transformers' attention interface (`attn_implementation="eager"`); the other members
    (sdpa, flex, flash) take the same arguments.

    Args:
        module: the calling attention module; only its `training` flag is read (dropout).
        query: Q, (B, h, T, d_k).
        key, value: K and V, (B, h, L, d_k) each.
        attention_mask: an additive float mask broadcastable to (B, h, T, L) (0 where attending, a large negative
            number where not), or None.
        scaling: the factor on Q K^T, 1 / sqrt(d_k) in the paper.
        dropout: dropout probability on the attention weights (0.0 outside training).
        kwargs: other keyword arguments of the attention interface, unused here.

    Returns:
        The output as (B, T, h, d_k) and the attention weights as (B, h, T, L).
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, h, T, L)
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value)  # (B, h, T, d_k)
    return output.transpose(1, 2).contiguous(), weights  # (B, T, h, d_k)


class VaswaniMultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O with head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    Section 3.2.2. The h heads' projections are stored as one (d_model, d_model) matrix each for Q, K, V.
    Used three ways (Section 3.2.3): encoder self-attention, masked decoder self-attention (`is_causal`), and
    encoder-decoder attention (`is_cross_attention`), whose keys and values are computed once per sequence.
    """

    def __init__(
        self,
        config: VaswaniConfig,
        num_heads: int,
        layer_idx: int | None = None,
        *,
        is_causal: bool = False,
        is_cross_attention: bool = False,
    ):
        super().__init__()
        self.config = config
        self.h = num_heads
        self.d_k = config.d_model // num_heads
        self.scaling = self.d_k**-0.5  # the 1/sqrt(d_k) of equation (1)
        self.dropout = config.attention_dropout
        self.layer_idx = layer_idx
        # Every attention module must say whether it is causal: SDPA reads `is_causal` when the mask is None.
        self.is_causal = is_causal
        self.is_cross_attention = is_cross_attention
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.h, self.d_k).transpose(1, 2)  # (B, h, T, d_k)

    def project_key_value(
        self, source: torch.Tensor, cache: Cache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V for this layer, (B, h, L, d_k) each, reusing and filling the cache where one is given."""
        if cache is None:
            return self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))
        if self.is_cross_attention:
            layer_cache = cache.cross_attention_cache
            if cache.is_updated.get(self.layer_idx):  # the encoder output does not change while decoding
                return layer_cache.layers[self.layer_idx].keys, layer_cache.layers[self.layer_idx].values
            cache.is_updated[self.layer_idx] = True
        else:  # the decoder-only model's cache holds self-attention alone
            layer_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        k, v = self.split_heads(self.k_proj(source)), self.split_heads(self.v_proj(source))
        return layer_cache.update(k, v, self.layer_idx)  # self-attention: (B, h, past + T, d_k)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = hidden_states.shape
        q = self.split_heads(self.q_proj(hidden_states))  # (B, h, T, d_k)
        source = key_value_states if self.is_cross_attention else hidden_states
        k, v = self.project_key_value(source, cache)  # (B, h, L, d_k)
        implementation = self.config._attn_implementation  # read once: a config attribute costs 1-2 us a read
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, scaled_dot_product_attention)
        if implementation == "sdpa" and q.dtype != torch.float32:
            attention = partial(in_float32_on_cpu, attention)  # torch's bf16 SDPA backward is slow on a CPU
        output, weights = attention(
            self,
            q,
            k,
            v,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        output = output.reshape(B, T, self.h * self.d_k)  # (B, T, h, d_k) -> (B, T, d_model): the Concat
        return self.out_proj(output), weights


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout (Section 5.4), not called at all outside training: decoding makes a dozen such calls per token."""
    return nn.functional.dropout(x, p, training) if training and p > 0 else x


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position alike. Section 3.3."""

    def __init__(self, config: VaswaniConfig, d_ff: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, config.d_model)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.fc1(x))  # (B, T, d_ff)
        x = dropout(x, self.activation_dropout, self.training)
        return self.fc2(x)  # (B, T, d_model)


class ResidualSublayer(nn.Module):
    """The wiring around every sub-layer (Sections 3.1 and 5.4): dropout on the sub-layer's output, a residual
    connection, and layer normalization. Post-LN, `LayerNorm(x + Dropout(Sublayer(x)))`, is the paper's;
    `pre_layer_norm=True` gives `x + Dropout(Sublayer(LayerNorm(x)))`."""

    def __init__(self, config: VaswaniConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = config.dropout  # functional, not a module: one module call fewer per sub-layer and token
        self.pre_layer_norm = config.pre_layer_norm

    def forward(self, x: torch.Tensor, sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.pre_layer_norm:
            return x + dropout(sublayer(self.layer_norm(x)), self.dropout, self.training)
        return self.layer_norm(x + dropout(sublayer(x), self.dropout, self.training))


class VaswaniEncoderLayer(GradientCheckpointingLayer):
    """Self-attention, then the feed-forward network, each wrapped in a residual sub-layer. Section 3.1."""

    def __init__(self, config: VaswaniConfig, layer_idx: int | None = None):
        super().__init__()
        self.self_attn = VaswaniMultiHeadAttention(config, config.encoder_attention_heads, layer_idx)
        self.self_attn_sublayer = ResidualSublayer(config)
        self.feed_forward = PositionwiseFeedForward(config, config.encoder_ffn_dim)
        self.feed_forward_sublayer = ResidualSublayer(config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        hidden_states = self.self_attn_sublayer(
            hidden_states, lambda x: self.self_attn(x, attention_mask=attention_mask, **kwargs)[0]
        )
        return self.feed_forward_sublayer(hidden_states, self.feed_forward)  # (B, S, d_model)


class VaswaniDecoderLayer(GradientCheckpointingLayer):
    """Masked self-attention, encoder-decoder attention, then the feed-forward network. Section 3.1.

    Without an encoder (`cross_attention=False`, the decoder-only model) the layer has no encoder-decoder attention
    and no weights for it: GPT's block, in the paper's wiring."""

    def __init__(self, config: VaswaniConfig, layer_idx: int | None = None, cross_attention: bool = True):
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = VaswaniMultiHeadAttention(config, heads, layer_idx, is_causal=True)
        self.self_attn_sublayer = ResidualSublayer(config)
        self.encoder_attn = self.encoder_attn_sublayer = None
        if cross_attention:
            self.encoder_attn = VaswaniMultiHeadAttention(config, heads, layer_idx, is_cross_attention=True)
            self.encoder_attn_sublayer = ResidualSublayer(config)
        self.feed_forward = PositionwiseFeedForward(config, config.decoder_ffn_dim)
        self.feed_forward_sublayer = ResidualSublayer(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        hidden_states = self.self_attn_sublayer(
            hidden_states, lambda x: self.self_attn(x, attention_mask=attention_mask, cache=cache, **kwargs)[0]
        )
        if self.encoder_attn is None:  # decoder-only
            return self.feed_forward_sublayer(hidden_states, self.feed_forward)  # (B, T, d_model)
        hidden_states = self.encoder_attn_sublayer(
            hidden_states,
            lambda x: self.encoder_attn(
                x,
                key_value_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                cache=cache,
                **kwargs,
            )[0],
        )
        return self.feed_forward_sublayer(hidden_states, self.feed_forward)  # (B, T, d_model)


# ----------------------------------------------------------------------------------------------------------------
# Pretrained-model plumbing: initialisation, self-contained checkpoints
# ----------------------------------------------------------------------------------------------------------------
class VaswaniPreTrainedModel(PreTrainedModel):
    """The base of every vaswani model: the config class, the initialisation, and checkpoints that carry their code.

    - Initialisation (`config.init_std`): the paper states none; N(0, 0.02) for every projection and embedding by
      default, as BART and Marian, or tensor2tensor's scheme with `init_std=None`.
    - `save_pretrained` also writes the code files and `auto_map`, so a saved folder or Hub repository loads with
      `trust_remote_code=True` where the plugin is not installed; `push_to_hub` adds vaswani's model card.
    - Attention implementations: "sdpa" (default), "eager" (`scaled_dot_product_attention`, needed for
      `output_attentions=True`), "flex_attention", "flash_attention_2"; gradient checkpointing is supported.
    """

    config: VaswaniConfig
    config_class = VaswaniConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["VaswaniEncoderLayer", "VaswaniDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    # torch.compile: input checks, which read tensor values on the host, are skipped while compiling (eager calls
    # check); a static cache's positions are tensors (`SinusoidalPositionalEncoding.forward`).
    _can_compile_fullgraph = True
    # Classes published in `auto_map` of every saved config (see `save_pretrained`): every shape, so that any
    # checkpoint loads into any of them as remote code; `AutoModel` is the saved model's own base (`_base_model_class`).
    _auto_map = {
        "AutoConfig": "configuration_vaswani.VaswaniConfig",
        "AutoModel": "modeling_vaswani.VaswaniModel",
        "AutoModelForSeq2SeqLM": "modeling_vaswani.VaswaniForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_vaswani.VaswaniForCausalLM",
        "AutoModelForMaskedLM": "modeling_vaswani.VaswaniForMaskedLM",
        "AutoModelForSequenceClassification": "modeling_vaswani.VaswaniForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_vaswani.VaswaniForTokenClassification",
    }
    _base_model_class = "VaswaniModel"
    # Base models: their stacks' token embeddings are one matrix (`shared`) whatever `tie_word_embeddings` says.
    _embeddings_always_tied = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`, with Hub kernels off unless asked for (`use_kernels=True`): transformers
        5.25 turns them on by default, and vaswani has no layer they replace (`compat_vaswani.without_hub_kernels`).
        A damaged weights file raises a `DamagedWeightsError` naming it (safetensors' own error names no file)."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **without_hub_kernels(kwargs))
        except SafetensorError as error:  # a truncated or overwritten file
            raise DamagedWeightsError(pretrained_model_name_or_path, error) from error

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The paper does not state its initialisation. Default (`init_std=0.02`): N(0, 0.02) for every projection
        and embedding, as BART/Marian; it trains faster early on than the alternative (measured: docs/training.md,
        "History"). `init_std=None`: Xavier-uniform projections and N(0, d_model^-0.5) embeddings, as tensor2tensor."""
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            if std is None:
                init.xavier_uniform_(module.weight)
            else:
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.config.d_model**-0.5 if std is None else std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VaswaniForConditionalGeneration) and module.final_logits_bias is not None:
            init.zeros_(module.final_logits_bias)
        elif isinstance(module, SinusoidalPositionalEncoding):
            # A non-persistent buffer: `from_pretrained` builds on the meta device, so rebuild it here.
            init.copy_(module.table, sinusoid_table(module.table.shape[0], module.d_model))

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """In a base model, source and target embeddings (`shared`) are always one matrix; `tie_word_embeddings`
        governs only a head's output projection (transformers would otherwise switch off every tie with it)."""
        if self._embeddings_always_tied and not all_submodels:
            return dict(self._tied_weights_keys)
        return super().get_expanded_tied_weights_keys(all_submodels=all_submodels)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights (safetensors), config and generation config into `save_directory`, plus the code files
        (`checkpoint_code_files`) and `auto_map`, so that the folder loads with `trust_remote_code=True` where
        `vaswani` is not installed. Other arguments are transformers' `save_pretrained`'s.

        transformers' own code saving (`register_for_auto_class`) copies only files in the model file's folder; in
        the installed package the config lives in a sibling folder, so the files are copied here instead.

        Writes are atomic per file: everything is written into a staging folder inside `save_directory` first and
        then renamed into place, so a full disk, a read-only folder or a killed process leaves the checkpoint that
        was there loadable, and an OSError says so.
        """
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **self._auto_map,
                                "AutoModel": f"modeling_vaswani.{self._base_model_class}"}  # fmt: skip
        if self.config.is_encoder_decoder:
            self.config.custom_pipelines = translation_pipelines()
        elif hasattr(self.config, "custom_pipelines"):  # a translation checkpoint's config, loaded into another shape
            del self.config.custom_pipelines
        if not kwargs.get("is_main_process", True):
            return super().save_pretrained(save_directory, *args, **kwargs)

        save_with_code(lambda staging: super(VaswaniPreTrainedModel, self).save_pretrained(staging, *args, **kwargs),
                       save_directory)  # fmt: skip

    def push_to_hub(self, repo_id: str, *, commit_message=None, commit_description=None, private=None, token=None,
                    revision=None, create_pr=False, max_shard_size="50GB", tags=None) -> str:  # fmt: skip
        """Uploads the self-contained checkpoint to the Hub repository `repo_id` (created if missing) in one commit,
        with vaswani's model card (architecture, usage for both loading paths) where the repository has none or
        only transformers' generic one. A vaswani card already there is kept; `tags` are added to it.

        The other arguments are those of transformers' `push_to_hub`: `commit_message`, `commit_description`,
        `private` (for a new repository), `token` (default: the logged-in one), `revision` (a branch),
        `create_pr` (open a pull request instead of committing), `max_shard_size`. Returns the commit URL.
        Loaded as remote code, without the plugin, it is transformers' own `push_to_hub`."""
        url = push_with_model_card(self, repo_id, commit_message=commit_message,
                                   commit_description=commit_description, private=private, token=token,
                                   revision=revision, create_pr=create_pr, max_shard_size=max_shard_size, tags=tags)
        if url is None:  # loaded as remote code, without the plugin: transformers' own card (which needs a list)
            return super().push_to_hub(repo_id, commit_message=commit_message, commit_description=commit_description,
                                       private=private, token=token, revision=revision, create_pr=create_pr,
                                       max_shard_size=max_shard_size, tags=tags or [])  # fmt: skip
        return url


# The base model of each encoder-only and decoder-only class: what `AutoModel` gives for its checkpoints.
ONE_STACK_BASES = {
    **dict.fromkeys(("VaswaniEncoderModel", "VaswaniForMaskedLM", "VaswaniForSequenceClassification",
                     "VaswaniForTokenClassification"), "VaswaniEncoderModel"),
    **dict.fromkeys(("VaswaniDecoderModel", "VaswaniForCausalLM"), "VaswaniDecoderModel"),
}  # fmt: skip


def shaped(config: VaswaniConfig, is_encoder_decoder: bool) -> VaswaniConfig:
    """The config for one of the three shapes: one `VaswaniConfig` describes them all, and `is_encoder_decoder`
    (read by transformers' generate, Trainer and pipelines) says which one a model is. A copy where it differs (as
    BartForCausalLM does): the translation checkpoint's config stays a translation config."""
    if config.is_encoder_decoder == is_encoder_decoder:
        return config
    config = copy.deepcopy(config)
    config.is_encoder_decoder = is_encoder_decoder
    return config


def embed(
    inputs_embeds: torch.Tensor,
    positions: nn.Module,
    past_length: int,
    config: VaswaniConfig,
    training: bool,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Token embeddings times sqrt(d_model) (Section 3.4) plus positional encodings (Section 3.5), then dropout
    on the sum (Section 5.4).

    `inputs_embeds` (B, T, d_model) are the embedding matrix's rows, what `get_input_embeddings()(input_ids)`
    returns: the lookup is the caller's, so that embeddings given in place of ids (`inputs_embeds`, PEFT's prompt
    tuning) are scaled and positioned exactly as looked-up ones. Positions are `past_length`, `past_length` + 1, ...
    for every row, or each row's own `position_ids` (B, T)."""
    x = inputs_embeds
    if config.scale_embedding:
        x = x * math.sqrt(config.d_model)
    x = x + positions(past_length, x.shape[1], position_ids).to(x.dtype)  # (T, d_model) broadcasts over B, or (B, T, d_model)
    return dropout(x, config.dropout, training)


def token_embeddings(
    embed_tokens: nn.Embedding,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    vocab_size: int,
    names: tuple[str, str],
    hint: str = "",
) -> torch.Tensor:
    """The rows of `embed_tokens` for `input_ids`, or `inputs_embeds` as given (exactly one of the two), checked
    before torch sees them; (B, T, d_model). `names`: the two arguments' names in the caller's forward; `hint`: what
    else the caller may pass instead."""
    ids_name, embeds_name = names
    if (input_ids is None) == (inputs_embeds is None):
        given = "both" if input_ids is not None else "neither"
        raise ValueError(f"Pass exactly one of `{ids_name}` and `{embeds_name}`{hint}; got {given}.")
    if input_ids is not None:
        if not is_torchdynamo_compiling():
            check_input_ids(input_ids, vocab_size, ids_name)
        return embed_tokens(input_ids)  # (B, T, d_model)
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0 or inputs_embeds.shape[2] != embed_tokens.embedding_dim:
        raise ValueError(
            f"`{embeds_name}` must have shape (batch_size, sequence_length, {embed_tokens.embedding_dim}) with at "
            f"least one position, got {tuple(inputs_embeds.shape)}: the rows `get_input_embeddings()(ids)` returns."
        )
    return inputs_embeds


class VaswaniEncoder(VaswaniPreTrainedModel):
    """N identical layers of self-attention and feed-forward. Section 3.1."""

    _can_record_outputs = {"hidden_states": VaswaniEncoderLayer, "attentions": VaswaniMultiHeadAttention}

    def __init__(self, config: VaswaniConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_positions = positional_encoding(config)
        self.layers = nn.ModuleList([VaswaniEncoderLayer(config, i) for i in range(config.encoder_layers)])
        # pre-LN leaves the residual stream unnormalised, so the stack ends with a LayerNorm.
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.pre_layer_norm else None
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""`input_ids` (B, S), or `inputs_embeds` (B, S, d_model), the rows `get_input_embeddings()(input_ids)`
        returns (scaled by sqrt(d_model) and given positions here alike), and their `attention_mask` (B, S; 1 for
        real tokens, 0 for padding). `kwargs` takes only transformers' `output_attentions` / `output_hidden_states`
        (and `labels`, which `generate` passes on and the encoder does not read); anything else is refused."""
        reject_unknown_kwargs(kwargs, type(self).__name__, also=ENCODER_KWARGS)
        inputs_embeds = token_embeddings(self.embed_tokens, input_ids, inputs_embeds, self.config.vocab_size,
                                         ("input_ids", "inputs_embeds"))  # fmt: skip
        if not is_torchdynamo_compiling():
            check_attention_mask(attention_mask, inputs_embeds.shape[:2], "attention_mask")
        hidden_states = embed(inputs_embeds, self.embed_positions, 0, self.config, self.training)  # (B, S, d_model)
        # One padding mask for the whole stack, in the form the attention implementation wants (Section 3.2.3).
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask, **kwargs)
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)  # (B, S, d_model)


class VaswaniDecoder(VaswaniPreTrainedModel):
    """N identical layers of masked self-attention, encoder-decoder attention and feed-forward. Section 3.1.

    With `config.is_encoder_decoder` False (the decoder-only model, GPT's shape) the layers have no encoder-decoder
    attention, and the cache holds self-attention alone."""

    _can_record_outputs = {
        "hidden_states": VaswaniDecoderLayer,
        "attentions": OutputRecorder(VaswaniMultiHeadAttention, index=1, layer_name="self_attn"),
        "cross_attentions": OutputRecorder(VaswaniMultiHeadAttention, index=1, layer_name="encoder_attn"),
    }

    def __init__(self, config: VaswaniConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.decoder_vocabulary, config.d_model, config.pad_token_id)
        self.embed_positions = positional_encoding(config)
        self.has_encoder = config.is_encoder_decoder
        self.layers = nn.ModuleList(
            [VaswaniDecoderLayer(config, i, cross_attention=self.has_encoder) for i in range(config.decoder_layers)]
        )
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps) if config.pre_layer_norm else None
        self.post_init()

    @accepts_past_key_values
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPastAndCrossAttentions:
        r"""`input_ids` (B, T): the target tokens so far (all of them when teacher-forced, the new ones when
        `cache` holds the past), or `inputs_embeds` (B, T, d_model), their rows of `embed_tokens`.
        `encoder_hidden_states` (B, S, d_model): the encoder's output, required with an encoder and refused without
        one. `cache` (also accepted as `past_key_values`): an `EncoderDecoderCache` (a `DynamicCache` without an
        encoder), built here when `use_cache` is set outside training. `position_ids` (B, T): each row's positions,
        by default past length onwards. `kwargs` takes only `output_attentions` / `output_hidden_states`."""
        reject_unknown_kwargs(kwargs, type(self).__name__)
        self.check_encoder_output(encoder_hidden_states)
        names = ("decoder_input_ids", "decoder_inputs_embeds") if self.has_encoder else ("input_ids", "inputs_embeds")
        hint = " (or `labels`, which the decoder inputs are derived from)" if self.has_encoder else ""
        inputs_embeds = token_embeddings(self.embed_tokens, input_ids, inputs_embeds, self.config.decoder_vocabulary,
                                         names, hint)  # fmt: skip
        # Training is teacher-forced: a cache would be filled and thrown away every step (+21% step time, measured).
        if use_cache and cache is None and not self.training:
            cache = DynamicCache(config=self.config)
            if self.has_encoder:
                cache = EncoderDecoderCache(cache, DynamicCache(config=self.config))
        past_length = cache.get_seq_length() if cache is not None else 0
        B, T = inputs_embeds.shape[:2]
        if not is_torchdynamo_compiling():
            check_attention_mask(attention_mask, (B, past_length + T), "decoder_attention_mask" if self.has_encoder else "attention_mask")
        hidden_states = embed(inputs_embeds, self.embed_positions, past_length, self.config, self.training, position_ids)
        # Masks built once for the stack: causal (Section 3.2.3, "prevent leftward information flow") and padding.
        self_attn_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        # One new position while decoding, unpadded, with a cache that holds only real positions: it may see every
        # cached position, so no mask is built. (A static cache holds unused slots, which only a mask hides.)
        self_mask = None
        if T > 1 or attention_mask is not None or getattr(self_attn_cache, "is_compileable", True):
            self_mask = causal_mask(self.config, hidden_states, attention_mask, self_attn_cache)
        cross_mask = None
        if self.has_encoder:
            cross_mask = self.cross_attention_mask(hidden_states, encoder_hidden_states, encoder_attention_mask, cache)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                self_mask,
                encoder_hidden_states,  # positional for checkpointing
                encoder_attention_mask=cross_mask,
                cache=cache,
                **kwargs,
            )
        if self.layer_norm is not None:
            hidden_states = self.layer_norm(hidden_states)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states, **with_cache(cache))

    def check_encoder_output(self, encoder_hidden_states: torch.Tensor | None) -> None:
        if self.has_encoder and encoder_hidden_states is None:
            raise ValueError(
                "VaswaniDecoder needs `encoder_hidden_states`, the encoder's output (B, S, d_model): pass "
                "`model.get_encoder()(input_ids, attention_mask=attention_mask).last_hidden_state`, or call the whole "
                "model (VaswaniModel or VaswaniForConditionalGeneration), which encodes the source itself."
            )
        if not self.has_encoder and encoder_hidden_states is not None:
            raise ValueError(
                "This decoder has no encoder-decoder attention (`config.is_encoder_decoder` is False: the "
                "decoder-only model, VaswaniForCausalLM), so `encoder_hidden_states` cannot be used. For translation "
                "use VaswaniForConditionalGeneration."
            )

    def cross_attention_mask(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        encoder_attention_mask: torch.Tensor | None,
        cache: EncoderDecoderCache | None,
    ):
        """The source padding mask for encoder-decoder attention, in the attention implementation's form. While
        decoding it is the same at every step, so it is built once and kept with the cache, for as long as the
        same source mask comes back (generation passes one tensor throughout); rebuilding it was about 9% of the
        tiny model's profiled decoding time."""
        shapes = (hidden_states.shape[:2], getattr(encoder_hidden_states, "shape", None))
        cached = getattr(cache, "vaswani_cross_attention_mask", None)
        if cached is not None:
            source_mask, cached_shapes, mask = cached
            if source_mask is encoder_attention_mask and cached_shapes == shapes:
                return mask
        mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=hidden_states,
            attention_mask=encoder_attention_mask,
            encoder_hidden_states=encoder_hidden_states,
        )
        if cache is not None and not is_torchdynamo_compiling():
            cache.vaswani_cross_attention_mask = (encoder_attention_mask, shapes, mask)
        return mask


class VaswaniModel(VaswaniPreTrainedModel):
    """The encoder-decoder Transformer of Figure 1 without its output projection: `AutoModel` for "vaswani".

    `VaswaniModel(config)` builds it from a `VaswaniConfig` with freshly initialised weights;
    `VaswaniModel.from_pretrained(path_or_hub_id)` loads one. Source and target share one embedding matrix
    (`shared`, Section 3.4) unless `config.share_encoder_decoder_embeddings` is False. `forward` returns a
    `Seq2SeqModelOutput` whose `last_hidden_state` is the decoder's output, (B, T, d_model).
    """

    _embeddings_always_tied = True

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=True)
        super().__init__(config)
        self.encoder = VaswaniEncoder(config)
        self.decoder = VaswaniDecoder(config)
        if config.share_encoder_decoder_embeddings:
            # One embedding matrix for source and target: the paper's vocabulary is shared (Sections 3.4 and 5.1).
            self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
            self._tied_weights_keys = {
                "encoder.embed_tokens.weight": "shared.weight",
                "decoder.embed_tokens.weight": "shared.weight",
            }
        else:  # separate source and target vocabularies (MarianMT's convention): nothing to tie here
            self.shared = None
            self._tied_weights_keys = {}
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' `from_pretrained`, except under `AutoModel` for an encoder-only or decoder-only checkpoint:
        one config class has one AutoModel (this class), so `AutoModel.from_pretrained(folder)` of a masked-LM,
        classifier or causal-LM checkpoint returns its own base model, `VaswaniEncoderModel` or
        `VaswaniDecoderModel` (as `auto_map` says for remote code), not this encoder-decoder with a new decoder or
        encoder. The choice is read off the `config` that AutoModel passes (its `architectures`)."""
        config = kwargs.get("config")
        if cls is VaswaniModel and isinstance(config, VaswaniConfig) and not config.is_encoder_decoder:
            base = ONE_STACK_BASES.get(next(iter(config.architectures or ()), None))
            if base is not None:
                return globals()[base].from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if self.config.share_encoder_decoder_embeddings:
            self.shared = self.encoder.embed_tokens = self.decoder.embed_tokens = value
        else:
            self.encoder.embed_tokens = value

    @accepts_past_key_values
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple[torch.Tensor] | BaseModelOutput | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqModelOutput:
        r"""Encode the source and decode the target in one pass.

        Args:
            input_ids: source token ids, (B, S).
            attention_mask: (B, S), 1 for real source tokens and 0 for padding.
            decoder_input_ids: target token ids, (B, T): all of them when teacher-forced, the new ones when `cache`
                holds the past.
            decoder_attention_mask: (B, past + T), 1 for real target tokens and 0 for padding; None means no
                target padding (the causal mask applies either way).
            encoder_outputs: an earlier encoding of the same source (a `BaseModelOutput` or a tuple whose first
                element is the (B, S, d_model) hidden states), used instead of `input_ids`.
            cache: the decoder's past while decoding, an `EncoderDecoderCache`; also accepted as
                `past_key_values`, transformers' name before 5.24 (not both). Built here when `use_cache` is
                set outside training.
            inputs_embeds, decoder_inputs_embeds: (B, S, d_model) and (B, T, d_model), instead of `input_ids` and
                `decoder_input_ids`: the embedding rows, as `get_input_embeddings()(ids)` returns them (PEFT's prompt
                tuning prepends its own); scaled by sqrt(d_model) (Section 3.4) and given positions here.
            use_cache: return the cache for the next decoding step (default: `config.use_cache`; never in
                training).
            kwargs: only transformers' `output_attentions` and `output_hidden_states` (attentions need
                `attn_implementation="eager"`); any other keyword is refused with a TypeError rather than
                ignored.

        Returns:
            `Seq2SeqModelOutput`: `last_hidden_state` (B, T, d_model), the cache, the encoder's last hidden state,
            and hidden states and attentions where asked for.
        """
        reject_unknown_kwargs(kwargs, type(self).__name__)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return Seq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            **with_cache(cache_of(decoder_outputs)),
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
        )


class VaswaniForConditionalGeneration(VaswaniPreTrainedModel, GenerationMixin):
    """The Transformer with its pre-softmax projection (Section 3.4): `AutoModelForSeq2SeqLM` for "vaswani".

    `VaswaniForConditionalGeneration(config)` builds it from a `VaswaniConfig`; `from_pretrained(path_or_hub_id)`
    loads one (with `trust_remote_code=True` where the plugin is not installed). The output projection `lm_head`
    is tied to the target embedding unless `config.tie_word_embeddings` is False.

    - `forward(input_ids, attention_mask, labels=...)` gives the loss and the logits (B, T, V): what Trainer and
      Seq2SeqTrainer call.
    - `generate(**tokenizer(texts, return_tensors="pt"))` translates with the model's generation config, output up
      to input length + 50 (Section 6.1): greedy for a model built from a config, the paper's beam 4 and length
      penalty 0.6 for the training job's checkpoints (`paper_generation_config`).
    - `save_pretrained` / `push_to_hub` write self-contained checkpoints (the code files travel with the
      weights); `from_marian` / `to_marian` convert from and to transformers' MarianMTModel with the same logits.
    """

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=True)
        super().__init__(config)
        self.model = VaswaniModel(config)
        # Tied to the target embedding unless `tie_word_embeddings=False` (Section 3.4).
        self.lm_head = nn.Linear(config.d_model, config.decoder_vocabulary, bias=False)  # Section 3.4
        if not config.share_encoder_decoder_embeddings:
            self._tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}
        # MarianMT's fixed logit offsets, for converted checkpoints (not in the paper; `add_final_logits_bias`).
        bias = torch.zeros(1, config.decoder_vocabulary) if config.add_final_logits_bias else None
        self.register_buffer("final_logits_bias", bias)
        self.post_init()  # decodes greedily, as transformers' models; the paper's beam: `paper_generation_config`

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Used by `DataCollatorForSeq2Seq(model=...)`, so that Trainer's label smoothing (which pops `labels`)
        still feeds the decoder."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    @accepts_past_key_values
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple[torch.Tensor] | BaseModelOutput | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Seq2SeqLMOutput:
        r"""Logits for every target position and, with `labels`, the training loss.

        Args:
            input_ids: source token ids, (B, S).
            attention_mask: (B, S), 1 for real source tokens and 0 for padding.
            decoder_input_ids: target token ids, (B, T). Leave out with `labels`: they are then `labels` shifted
                right behind the start token `<s>` (teacher forcing).
            decoder_attention_mask: (B, past + T), 1 for real target tokens and 0 for padding, or None.
            encoder_outputs: an earlier encoding of the same source, used instead of `input_ids`.
            cache: the decoder's past while decoding (also accepted as `past_key_values`, not both); see
                `VaswaniModel.forward`.
            inputs_embeds, decoder_inputs_embeds: embeddings instead of ids; see `VaswaniModel.forward`.
            labels: target token ids, (B, T), -100 where no loss is wanted (padding). Turns the cache off.
            use_cache: return the cache for the next decoding step.
            kwargs: `num_items_in_batch` (passed by Trainer), `label_smoothing` (epsilon of Section 5.4 for the
                loss from `labels`; default 0.0, the plain cross-entropy) and transformers' `output_attentions` /
                `output_hidden_states`; any other keyword raises a TypeError.

        Returns:
            `Seq2SeqLMOutput` with `logits` (B, T, V) and, with `labels`, `loss`: the mean token cross-entropy over
            labels other than -100, or its sum divided by `num_items_in_batch` when Trainer passes that count (so
            gradient accumulation gives the gradient of one large batch); with `label_smoothing` epsilon, the loss
            against the smoothed target of Section 5.4, the same as Trainer's `label_smoothing_factor` computes from
            the logits. Computed here, it runs inside the caller's autocast on the logits as they are (bf16 under
            bf16 autocast), which is faster than Trainer's or a `compute_loss_func`: those get the logits after
            accelerate has copied them to float32.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        label_smoothing = check_label_smoothing(kwargs.pop("label_smoothing", 0.0))
        reject_unknown_kwargs(kwargs, type(self).__name__)
        if labels is not None:
            if not is_torchdynamo_compiling():
                check_labels(labels, self.config.decoder_vocabulary)
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            elif decoder_input_ids is not None and decoder_input_ids.shape != labels.shape:
                raise ValueError(
                    f"`labels` has shape {tuple(labels.shape)} but `decoder_input_ids` has shape "
                    f"{tuple(decoder_input_ids.shape)}: pass only `labels` (decoder inputs are derived from them), or "
                    "decoder inputs of the same shape."
                )
        outputs = self.model(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            cache=cache,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (B, T, V)
        if self.final_logits_bias is not None:
            logits = logits + self.final_logits_bias.to(logits.dtype)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits, labels, num_items_in_batch, label_smoothing)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            **with_cache(cache_of(outputs)),
            decoder_hidden_states=outputs.decoder_hidden_states,
            decoder_attentions=outputs.decoder_attentions,
            cross_attentions=outputs.cross_attentions,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state,
            encoder_hidden_states=outputs.encoder_hidden_states,
            encoder_attentions=outputs.encoder_attentions,
        )

    @classmethod
    def from_marian(cls, model_or_path, **kwargs) -> "VaswaniForConditionalGeneration":
        """Converts a MarianMTModel into a vaswani model with the same logits and generations.

        `model_or_path`: a `MarianMTModel`, a folder, or a Hub id such as "Helsinki-NLP/opus-mt-en-de"; `kwargs`
        go to `MarianMTModel.from_pretrained`. The tokenizer stays the Marian one (`AutoTokenizer` of the same
        path). Needs the installed plugin (`vaswani.modeling.marian`); refuses what has no vaswani equivalent
        with a `MarianConversionError` naming the option."""
        try:
            from vaswani.modeling.marian import from_marian
        except ImportError as error:  # loaded as remote code
            raise ImportError("MarianMT conversion is part of the vaswani plugin: `pip install vaswani`.") from error

        return from_marian(model_or_path, **kwargs)

    def to_marian(self):
        """Exports to a MarianMTModel with the same logits (for CTranslate2, ONNX and other MarianMT tools)."""
        try:
            from vaswani.modeling.marian import to_marian
        except ImportError as error:  # loaded as remote code
            raise ImportError("MarianMT conversion is part of the vaswani plugin: `pip install vaswani`.") from error

        return to_marian(self)

    def _reorder_cache(self, cache: Cache, beam_idx: torch.Tensor) -> Cache:
        """Beam search's cache update (`generate` calls this hook where a model has it): the decoder's self-attention
        keys and values follow the beams kept, (B * beams, h, past, d_k) rows picked by `beam_idx`.

        The encoder-decoder attention's keys and values stay where they are: every beam of a sentence has the same
        ones (computed from its source, which generate repeats once per beam), and beams never move to another
        sentence, so picking them would copy each row onto an equal one. That copy was two thirds of the reordering
        and 5-8% of a beam-search step (docs/performance.md)."""
        return reorder_self_attention(cache, beam_idx)

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, *args, **kwargs):
        """`GenerationMixin.generate`, with the paper's output-length rule as the default (Section 6.1).

        `inputs` (or `input_ids=`, or `inputs_embeds=`) are the source ids, (B, S), with their `attention_mask`;
        `generation_config`, `args` (`logits_processor`, ... in the base's order) and `kwargs` are transformers'
        (`num_beams`, `max_new_tokens`, `do_sample`, ...). The model's generation config
        applies where the call says nothing: greedy for a model built from a config, the paper's beam 4 and length
        penalty 0.6 in the training job's checkpoints (`generation_config=paper_generation_config()` asks for it in
        one call). When neither the call nor the generation config bounds the length, outputs stop at input length
        + 50. Returns the generated ids, (B * num_return_sequences, <= S + 51),
        starting with the decoder start token `<s>`.
        """
        generation_config = bound_output_length(inputs, generation_config, self.generation_config, kwargs)
        config = generation_config or self.generation_config
        if (kwargs.get("cache_implementation") or config.cache_implementation) not in (None, "dynamic"):
            self.cover_decoder_positions(config, kwargs)
        warn_of_emulated_bf16(self)
        return super().generate(inputs, generation_config, *args, **kwargs)

    def cover_decoder_positions(self, config, kwargs: dict) -> None:
        """A static cache (`cache_implementation="static"`, what compiled decoding uses) holds every position up to
        the output's maximum length, and compiled steps cannot grow the sinusoid table: extend it now, or refuse
        learned positions that stop short, before any decoding work."""
        length = output_length(config, kwargs)
        if length is not None:
            self.model.decoder.embed_positions.cover_positions(length)


# ----------------------------------------------------------------------------------------------------------------
# The same blocks, two more ways: the encoder stack alone (BERT's shape) and the decoder stack alone (GPT's shape).
# One `VaswaniConfig` describes all three: the encoder-only models read its `encoder_*` fields, the decoder-only
# model its `decoder_*` fields. The weights are named as in the translation model (`model.shared`, `model.encoder`,
# `model.decoder`), so a translation checkpoint's encoder loads into the encoder-only classes and a masked-LM
# checkpoint into the classification heads; what does not carry over is reported as transformers reports it.
# ----------------------------------------------------------------------------------------------------------------
class VaswaniEncoderModel(VaswaniPreTrainedModel):
    """The encoder stack alone (the left half of Figure 1, BERT's shape): `last_hidden_state` (B, S, d_model), one
    vector per token, for feature extraction and as the body of the encoder-only heads.

    `VaswaniEncoderModel.from_pretrained(translation_checkpoint)` takes a trained translation model's encoder: a
    sentence encoder (the decoder's weights are reported unused). `config.is_encoder_decoder` is False here."""

    _embeddings_always_tied = True
    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight"}
    _base_model_class = "VaswaniEncoderModel"

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=False)
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = VaswaniEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.encoder.embed_tokens = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutput:
        r"""`input_ids` (B, S) or `inputs_embeds` (B, S, d_model), with their `attention_mask` (B, S; 1 for real
        tokens, 0 for padding). Returns a `BaseModelOutput`: `last_hidden_state` (B, S, d_model), and hidden states
        and attentions where asked for (`output_hidden_states`, `output_attentions`; any other keyword is refused)."""
        reject_unknown_kwargs(kwargs, type(self).__name__)
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)


class VaswaniEncoderOnlyPreTrainedModel(VaswaniPreTrainedModel):
    """The base of the encoder-only heads: `model`, a `VaswaniEncoderModel`, and the head's checks."""

    _base_model_class = "VaswaniEncoderModel"

    def encode(self, input_ids, attention_mask, inputs_embeds, kwargs: dict) -> BaseModelOutput:
        reject_unknown_kwargs(kwargs, type(self).__name__)
        return self.model(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)

    def check_class_labels(self, labels: torch.Tensor, ignore: bool) -> None:
        """Class ids in [0, num_labels), or -100 where `ignore` (token classification's unlabelled positions)."""
        if is_torchdynamo_compiling() or labels.dtype.is_floating_point:
            return
        allowed = (labels >= 0) & (labels < self.config.num_labels)
        bad = labels[~(allowed | ((labels == -100) if ignore else False))]
        if bad.numel():
            raise ValueError(
                f"`labels` contains {bad[0].item()}, not a class id of this model's {self.config.num_labels} "
                f"classes (0 to {self.config.num_labels - 1}{'; -100 where no loss is wanted' if ignore else ''}). "
                "Load the model with `num_labels=` the number of classes (and `id2label=`), or map the labels to ids."
            )


class VaswaniForMaskedLM(VaswaniEncoderOnlyPreTrainedModel):
    """The encoder with the pre-softmax projection tied to its embeddings (Section 3.4): BERT's masked-LM
    pretraining, `AutoModelForMaskedLM` for "vaswani", `pipeline("fill-mask")`. The tokenizer needs a mask token:
    `tokenizer.add_special_tokens({"mask_token": "<mask>"})` and `model.resize_token_embeddings(len(tokenizer))`.

    `VaswaniForMaskedLM(config)` builds it from a `VaswaniConfig` (its `encoder_*` fields), `from_pretrained` loads
    one. `forward(input_ids, attention_mask, labels)` gives the logits (B, S, V) and, with `labels` (-100 where no
    loss is wanted, as `DataCollatorForLanguageModeling(mlm=True)` makes them), the loss over the masked tokens."""

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=False)
        super().__init__(config)
        self.model = VaswaniEncoderModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedLMOutput:
        r"""`input_ids` (B, S) with the masked positions replaced (or `inputs_embeds` (B, S, d_model), their
        embedding rows), `attention_mask` (B, S), `labels` (B, S): the original ids at the masked positions and -100
        elsewhere. `kwargs`: `num_items_in_batch` (Trainer's),
        `label_smoothing` (Section 5.4's epsilon, default 0) and transformers' output flags. Returns a
        `MaskedLMOutput` with `logits` (B, S, V) and, with `labels`, `loss` (the mean over labelled positions, or
        the sum over `num_items_in_batch`)."""
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        label_smoothing = check_label_smoothing(kwargs.pop("label_smoothing", 0.0))
        if labels is not None and not is_torchdynamo_compiling():  # before any work
            check_labels(labels, self.config.vocab_size)
        outputs = self.encode(input_ids, attention_mask, inputs_embeds, kwargs)
        logits = self.lm_head(outputs.last_hidden_state)  # (B, S, V)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits, labels, num_items_in_batch, label_smoothing)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                              attentions=outputs.attentions)  # fmt: skip


def mean_over_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of the real tokens' vectors, (B, S, d_model) -> (B, d_model): padding does not count."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # (B, S, 1)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class VaswaniForSequenceClassification(VaswaniEncoderOnlyPreTrainedModel):
    """The encoder with a linear classifier on the mean of its output vectors: `AutoModelForSequenceClassification`,
    `pipeline("text-classification")`. Regression (`num_labels=1`), single-label and multi-label classification
    follow transformers' `config.problem_type` (inferred from the labels where not set).

    Pooling is the mean over real tokens, because the paper's encoder has no [CLS] token and nothing trains one
    position to summarise the sentence; averaging is what sentence encoders found best (Sentence-BERT, 2019)."""

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=False)
        super().__init__(config)
        self.model = VaswaniEncoderModel(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutput:
        r"""`input_ids` (B, S) or `inputs_embeds` (B, S, d_model), `attention_mask` (B, S), and `labels`: class
        ids (B,) for single-label, floats (B, num_labels) of 0/1 for multi-label, floats (B,) for regression.
        `kwargs`: transformers' output flags (and Trainer's `num_items_in_batch`, not needed: one label per
        sequence); any other keyword raises a TypeError. Returns a `SequenceClassifierOutput` with `logits`
        (B, num_labels) and, with `labels`, `loss`."""
        kwargs.pop("num_items_in_batch", None)  # one label per sequence: the batch mean is the loss
        problem_type = self.config.problem_type or ("regression" if self.config.num_labels == 1 else None)
        if labels is not None and problem_type in (None, "single_label_classification"):  # before any work
            self.check_class_labels(labels, ignore=False)  # regression's targets are numbers, not class ids
        outputs = self.encode(input_ids, attention_mask, inputs_embeds, kwargs)
        pooled = mean_over_tokens(outputs.last_hidden_state, attention_mask)  # (B, d_model)
        logits = self.classifier(dropout(pooled, self.config.dropout, self.training))  # (B, num_labels)
        loss = None
        if labels is not None:
            loss = self.loss_function(labels=labels, pooled_logits=logits, config=self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)  # fmt: skip


class VaswaniForTokenClassification(VaswaniEncoderOnlyPreTrainedModel):
    """The encoder with a linear classifier on every output vector: `AutoModelForTokenClassification`,
    `pipeline("token-classification")` (tagging, named entities). `VaswaniForTokenClassification(config)` builds it
    from a `VaswaniConfig` with `num_labels`; `from_pretrained(masked_lm_or_translation_checkpoint, num_labels=...)`
    starts from a trained encoder."""

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=False)
        super().__init__(config)
        self.model = VaswaniEncoderModel(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenClassifierOutput:
        r"""`input_ids` (B, S) or `inputs_embeds` (B, S, d_model), `attention_mask` (B, S), `labels` (B, S): a
        class id per token, -100 where no loss is wanted (padding, a word's later pieces). `kwargs`: Trainer's
        `num_items_in_batch` and transformers' output flags; any other keyword raises a TypeError. Returns a `TokenClassifierOutput` with `logits` (B, S, num_labels)
        and, with `labels`, `loss` (the mean over labelled tokens, or the sum over Trainer's `num_items_in_batch`)."""
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        if labels is not None:  # before any work
            self.check_class_labels(labels, ignore=True)
        outputs = self.encode(input_ids, attention_mask, inputs_embeds, kwargs)
        hidden_states = dropout(outputs.last_hidden_state, self.config.dropout, self.training)
        logits = self.classifier(hidden_states)  # (B, S, num_labels)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits, labels, num_items_in_batch, 0.0)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)  # fmt: skip


class VaswaniDecoderModel(VaswaniPreTrainedModel):
    """The decoder stack alone (the right half of Figure 1 without encoder-decoder attention, GPT's shape):
    `last_hidden_state` (B, T, d_model) and the key/value cache. The body of `VaswaniForCausalLM`.

    Positions count from each row's first real token (`attention_mask`), so a left-padded batch gives every row
    what it gives alone. `config.is_encoder_decoder` is False here."""

    _embeddings_always_tied = True
    _tied_weights_keys = {"decoder.embed_tokens.weight": "shared.weight"}
    _base_model_class = "VaswaniDecoderModel"

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=False)
        super().__init__(config)
        self.shared = nn.Embedding(config.decoder_vocabulary, config.d_model, config.pad_token_id)
        self.decoder = VaswaniDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.shared = self.decoder.embed_tokens = value

    @accepts_past_key_values
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""`input_ids` (B, T): the tokens (the new ones when `cache` holds the past), or `inputs_embeds`
        (B, T, d_model); `attention_mask` (B, past + T), 0 at padding, left or right; `position_ids` (B, T), by
        default counted from each row's first real token; `cache` (also `past_key_values`): a `DynamicCache`, built
        here when `use_cache` is set outside training. `kwargs`: only transformers' `output_attentions` /
        `output_hidden_states`. Returns a `BaseModelOutputWithPast`."""
        reject_unknown_kwargs(kwargs, type(self).__name__)
        if position_ids is None and attention_mask is not None and attention_mask.dim() == 2:
            inputs = input_ids if input_ids is not None else inputs_embeds
            if inputs is not None and inputs.dim() >= 2:  # else the decoder says what is wrong with them
                if not is_torchdynamo_compiling():  # the mask is read here: check it first, before any work
                    past_length = cache.get_seq_length() if cache is not None else 0
                    check_attention_mask(attention_mask, (inputs.shape[0], past_length + inputs.shape[1]),
                                         "attention_mask")  # fmt: skip
                position_ids = positions_after_padding(attention_mask, inputs.shape[1])
        outputs = self.decoder(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                               inputs_embeds=inputs_embeds, use_cache=use_cache, position_ids=position_ids,
                               **kwargs)  # fmt: skip
        return BaseModelOutputWithPast(last_hidden_state=outputs.last_hidden_state, **with_cache(cache_of(outputs)),
                                       hidden_states=outputs.hidden_states, attentions=outputs.attentions)  # fmt: skip


def positions_after_padding(attention_mask: torch.Tensor, length: int) -> torch.Tensor:
    """The positions of the last `length` columns of `attention_mask` (B, past + T), counted from each row's first
    real token, (B, T); padding gets position 0 (it is masked, its vector unused)."""
    positions = attention_mask.long().cumsum(-1) - 1  # (B, past + T)
    return positions[:, -length:].clamp(min=0)


class VaswaniForCausalLM(VaswaniPreTrainedModel, GenerationMixin):
    """The decoder stack with its pre-softmax projection tied to the embeddings (Section 3.4): a GPT-style language
    model, `AutoModelForCausalLM` for "vaswani", `pipeline("text-generation")`.

    - `forward(input_ids, attention_mask, labels=input_ids)` gives the next-token loss (labels are shifted inside;
      -100 where no loss is wanted, as `DataCollatorForLanguageModeling(mlm=False)` makes them) and logits (B, T, V).
    - `generate(**tokenizer(prompts, return_tensors="pt"))`: greedy, beam or sampling with a key/value cache;
      a left-padded batch (`tokenizer.padding_side = "left"`) gives each row what it gives alone. Prompts must not
      end in `</s>`: load the tokenizer with `add_eos_token=False`.

    `VaswaniForCausalLM(config)` builds it from a `VaswaniConfig` (its `decoder_*` fields); `from_pretrained` loads
    one (with `trust_remote_code=True` where the plugin is not installed).
    """

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}
    _base_model_class = "VaswaniDecoderModel"

    def __init__(self, config: VaswaniConfig):
        config = shaped(config, is_encoder_decoder=False)
        super().__init__(config)
        self.model = VaswaniDecoderModel(config)
        self.lm_head = nn.Linear(config.d_model, config.decoder_vocabulary, bias=False)  # Section 3.4
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    @accepts_past_key_values
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""Next-token logits and, with `labels`, the language-model loss.

        Args:
            input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache: see `VaswaniDecoderModel`.
            labels: (B, T), usually `input_ids` with -100 at padding; the logits at position t are scored against
                `labels[:, t + 1]` (the shift is done here). Turns the cache off.
            logits_to_keep: compute logits for the last this many positions only (0: all); `generate` asks for 1.
            kwargs: `num_items_in_batch` (Trainer's), `label_smoothing` (Section 5.4's epsilon, default 0),
                `shift_labels` (targets already aligned with the logits, which replace `labels`: what Trainer
                passes under sequence parallelism, where the shift must happen before the sequence is split) and
                transformers' output flags; any other keyword raises a TypeError.

        Returns:
            `CausalLMOutputWithPast`: `logits` (B, T, V), `loss` (the mean over predicted tokens, or their sum over
            `num_items_in_batch`, so that gradient accumulation gives the gradient of one large batch), the cache.
        """
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        label_smoothing = check_label_smoothing(kwargs.pop("label_smoothing", 0.0))
        shift_labels = kwargs.pop("shift_labels", None)  # targets already aligned with the logits (see Returns)
        for given in (labels, shift_labels):
            if given is not None:
                self.check_lm_labels(given, input_ids if input_ids is not None else inputs_embeds)
                use_cache = False
        outputs = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                             inputs_embeds=inputs_embeds, use_cache=use_cache, **kwargs)  # fmt: skip
        hidden_states = outputs.last_hidden_state  # (B, T, d_model)
        if logits_to_keep and labels is None and shift_labels is None:
            hidden_states = hidden_states[:, -logits_to_keep:]
        logits = self.lm_head(hidden_states)  # (B, T, V)
        loss = None
        if shift_labels is None and labels is not None:
            # Position t predicts token t + 1: the targets move one step left, the last position predicts nothing.
            shift_labels = nn.functional.pad(labels[:, 1:], (0, 1), value=-100)  # (B, T)
        if shift_labels is not None:
            loss = cross_entropy(logits, shift_labels, num_items_in_batch, label_smoothing)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **with_cache(cache_of(outputs)),
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)  # fmt: skip

    def check_lm_labels(self, labels: torch.Tensor, inputs: torch.Tensor | None) -> None:
        if is_torchdynamo_compiling():
            return
        check_labels(labels, self.config.decoder_vocabulary)
        if inputs is not None and labels.shape != inputs.shape[:2]:
            raise ValueError(
                f"`labels` has shape {tuple(labels.shape)} but the inputs have {tuple(inputs.shape[:2])}: a causal "
                "language model's labels are its inputs (shifted inside), usually `labels=input_ids` with -100 at "
                "padding."
            )

    def _reorder_cache(self, cache: Cache, beam_idx: torch.Tensor) -> Cache:
        """Beam search's cache update: the keys and values follow the beams kept."""
        return reorder_self_attention(cache, beam_idx)

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, *args, **kwargs):
        """`GenerationMixin.generate`, unchanged but for one check before any decoding work: learned positions that
        stop short of the longest output are refused (with any cache), and with a static cache (compiled decoding)
        the sinusoid table is extended to it. `inputs` (or `input_ids=`) are the prompts' ids, (B, T), with their
        `attention_mask`; `generation_config`, `args` and `kwargs` (`max_new_tokens`, `do_sample`, `num_beams`, ...)
        are transformers'. Returns the prompts followed by the generated ids."""
        config = generation_config or self.generation_config
        static = (kwargs.get("cache_implementation") or config.cache_implementation) not in (None, "dynamic")
        if static or self.config.position_embedding_type == "learned":
            positions = self.positions_needed(config, inputs, kwargs)
            if positions is not None:
                self.model.decoder.embed_positions.cover_positions(positions)
        warn_of_emulated_bf16(self)
        return super().generate(inputs, generation_config, *args, **kwargs)

    @staticmethod
    def positions_needed(config, inputs: torch.Tensor | None, kwargs: dict) -> int | None:
        """How many positions `generate` will feed the model (None: unbounded): the longest prompt, counted from its
        first real token (`attention_mask`) as positions are, plus the new tokens but the last, which is never fed
        back."""
        prompt = next((x for x in (inputs, kwargs.get("input_ids"), kwargs.get("inputs_embeds")) if x is not None),
                      None)  # fmt: skip
        max_new_tokens = kwargs.get("max_new_tokens") or config.max_new_tokens
        if max_new_tokens is None or prompt is None:  # bounded by the total length, if at all
            max_length = kwargs.get("max_length") or config.max_length
            return None if max_length is None else max_length - 1
        mask = kwargs.get("attention_mask")
        longest = int(mask.sum(-1).max()) if mask is not None and mask.dim() == 2 else prompt.shape[1]
        return longest + max_new_tokens - 1


def warn_of_emulated_bf16(model: PreTrainedModel) -> None:
    if model.dtype == torch.bfloat16 and model.device.type == "cpu" and cpu_lacks_bf16():
        logger.warning_once(
            "This model's weights are bfloat16, but this CPU has no bf16 instructions (AVX-512 BF16 or AMX): "
            "torch emulates them, and decoding is slower than in float32. Call `model.float()`, or load without "
            "`dtype=torch.bfloat16`."
        )


def reorder_self_attention(cache: Cache, beam_idx: torch.Tensor) -> Cache:
    """Beam search's reordering of a decoder's past (`_reorder_cache`): the self-attention keys and values follow the
    beams kept, (B * beams, h, past, d_k) rows picked by `beam_idx`; the encoder-decoder ones stay (every beam of a
    sentence has the same, and beams never move to another sentence)."""
    if isinstance(cache, EncoderDecoderCache):
        cache.self_attention_cache.reorder_cache(beam_idx)
    else:
        cache.reorder_cache(beam_idx)
    return cache


def bound_output_length(inputs, generation_config, default_config, kwargs: dict):
    """The paper's output bound (Section 6.1), input length + 50 new tokens, where neither the call (`kwargs`) nor
    the generation config in use bounds the length. Sets it in `kwargs`, or, when the caller passed a
    `generation_config`, in a copy of it (transformers warns of a config and arguments together); returns the
    generation config to pass on (None where none was given)."""
    config = generation_config or default_config
    unbounded = all(kwargs.get(key) is None for key in ("max_length", "max_new_tokens"))
    if not unbounded or config.max_new_tokens is not None or config.max_length is not None:
        return generation_config
    source = next((x for x in (inputs, kwargs.get("input_ids"), kwargs.get("inputs_embeds")) if x is not None), None)
    if source is None:
        return generation_config
    bound = source.shape[1] + MAX_OUTPUT_LENGTH_OFFSET  # (B, S) ids or (B, S, d_model) embeddings
    if generation_config is None:
        kwargs["max_new_tokens"] = bound
        return None
    generation_config = copy.deepcopy(generation_config)
    generation_config.max_new_tokens = bound
    return generation_config


def output_length(config, kwargs: dict) -> int | None:
    """The most target positions `generate` will fill, the decoder's start included, from the call's `kwargs` and
    the generation config `config` (None: unbounded)."""
    max_new_tokens = kwargs.get("max_new_tokens") or config.max_new_tokens
    if max_new_tokens is None:
        return kwargs.get("max_length") or config.max_length
    start = kwargs.get("decoder_input_ids")
    return max_new_tokens + (start.shape[-1] if start is not None else 1)


__all__ = [
    "VaswaniDecoderModel",
    "VaswaniEncoderModel",
    "VaswaniForCausalLM",
    "VaswaniForConditionalGeneration",
    "VaswaniForMaskedLM",
    "VaswaniForSequenceClassification",
    "VaswaniForTokenClassification",
    "VaswaniModel",
    "VaswaniPreTrainedModel",
]
