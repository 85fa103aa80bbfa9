"""Where transformers releases differ, absorbed in one place, so that `modeling_vaswani.py` reads the same on each.

vaswani supports a window of transformers releases (`pyproject.toml`; README, "Supported versions"), and every
checkpoint carries a copy of this file beside `modeling_vaswani.py`, so the remote code of a checkpoint meets newer
releases with the same shims. Each name below is read off the installed transformers (a signature, a dataclass
field), not derived from its version number: a release that moves one API and not another is met part by part.

What is absorbed here, and since when:
- transformers 5.24 renamed the cache from `past_key_values` to `cache`. `generate` keeps it in
  `model_kwargs["cache"]` and calls `forward(..., cache=...)`; output classes name the field `cache`; the mask
  helpers take `cache=` (the old keyword warns until 5.40). Before 5.24 all three said `past_key_values`. A forward
  that took only the old name silently received the new one in `**kwargs` and decoded every step without its past.
  vaswani's forwards take both names, and from 5.24 warn of the old one as transformers' models do.
- transformers 5.25 applies Hub kernels by default: `from_pretrained` without `use_kernels` kernelizes the model,
  and raises `ValueError: Kernels are not available` where the `kernels` package (0.19.1-0.19.x) is missing (an
  environment installed with `--no-deps` from a lock, or a registry without it). vaswani has no layer a Hub kernel
  replaces, and its offline use must not fetch code at run time, so its `from_pretrained` passes `use_kernels=False`
  unless the caller asks (`without_hub_kernels`). Before 5.25 the default was already False.

This file imports only torch and transformers: it runs where vaswani is not installed.
"""

import contextlib
import functools
import inspect
import platform
from collections.abc import Callable
from itertools import chain
from typing import TypedDict

import torch
import transformers
from transformers import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import Seq2SeqLMOutput

# The releases vaswani is tested on: pyproject.toml states the same window (a test checks that the two agree).
SUPPORTED_TRANSFORMERS = ">=5.23,<5.26"


def _takes(function: Callable, name: str) -> bool:
    return name in inspect.signature(function).parameters  # follows `functools.wraps` to the wrapped function


# The keyword `generate` passes the cache under (the name `prepare_inputs_for_generation` puts it in).
GENERATE_CACHE_NAME = "cache" if _takes(GenerationMixin.prepare_inputs_for_generation, "cache") else "past_key_values"
# The field model outputs keep the cache in. (From 5.24 `.past_key_values` still reads it, with a warning.)
OUTPUT_CACHE_FIELD = "cache" if "cache" in Seq2SeqLMOutput.__dataclass_fields__ else "past_key_values"
# The keyword of `create_causal_mask` for the cache.
MASK_CACHE_NAME = "cache" if _takes(create_causal_mask, "cache") else "past_key_values"

# Releases whose `from_pretrained` takes `use_kernels` (5.x; `set_use_kernels` came with it).
TAKES_USE_KERNELS = hasattr(transformers.PreTrainedModel, "set_use_kernels")


def without_hub_kernels(kwargs: dict) -> dict:
    """`from_pretrained`'s keyword arguments with Hub kernels off unless the caller chose (`use_kernels=True`).

    transformers 5.25 reads an absent or None `use_kernels` as True (unless `USE_HUB_KERNELS` is off): it would
    kernelize a model that has no kernel layers, and fail where `kernels` is not installed."""
    if TAKES_USE_KERNELS and kwargs.get("use_kernels") is None:
        kwargs = {**kwargs, "use_kernels": False}
    return kwargs


def cpu_lacks_bf16() -> bool:
    """Whether this is an x86 CPU without bf16 instructions (neither AVX-512 BF16 nor AMX), where torch emulates
    bf16 arithmetic and bf16 weights decode slower than float32 ones. False where torch cannot tell (its probes are
    private, `torch.cpu._is_avx512_bf16_supported` in 2.13 and 2.14) and on other architectures."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if None in probes:
        return False
    return not any(probe() for probe in probes)


# The type of a forward's `**kwargs` in transformers' models, `**kwargs: Unpack[TransformersKwargs]`: its tools read
# it (the eager-against-SDPA test asks whether `output_attentions` is among them). Exported by `transformers.utils`
# on 5.23-5.25 (defined in `transformers.utils.generic`); a release that moves or drops it gets the fields vaswani
# reads, so that the annotation never breaks an import.
try:
    from transformers.utils import TransformersKwargs
except ImportError:  # pragma: no cover - not on a supported release
    try:
        from transformers.utils.generic import TransformersKwargs
    except ImportError:

        class TransformersKwargs(TypedDict, total=False):
            output_attentions: bool | None
            output_hidden_states: bool | None
            num_items_in_batch: torch.Tensor | int | None


# What may arrive in a forward's `**kwargs` besides its declared arguments: transformers' output switches (read by
# `capture_outputs`) and `use_cache`, which `merge_with_config_defaults` adds for the encoder, which keeps no cache.
# Anything else is a mistake or an API this code does not know, and is refused (`reject_unknown_kwargs`).
KNOWN_KWARGS = frozenset({"output_attentions", "output_hidden_states", "use_cache"})
# `generate` hands the encoder every model keyword argument not meant for the decoder, `labels` included (which
# Seq2SeqTrainer passes when it evaluates with generation).
ENCODER_KWARGS = frozenset({"labels"})


# Where `cache` is transformers' name, its models deprecate `past_key_values` with this decorator and release.
PAST_KEY_VALUES_REMOVED_IN = "5.40.0"


def accepts_past_key_values(forward: Callable) -> Callable:
    """Lets a `forward(..., cache=...)` also be called with `past_key_values=`, the name transformers used before
    5.24 (where `generate` passes it), and user code still uses. Both at once is an error.

    Where the installed transformers names the cache `cache` (5.24 and newer), the old name warns as it does for
    transformers' own models: their `deprecate_kwarg` (a FutureWarning "`past_key_values` is deprecated and will be
    removed in version 5.40.0 ..."), silent while compiling. Before 5.24 it is the native name: no warning."""
    renamed = GENERATE_CACHE_NAME == "cache"
    if renamed:
        from transformers.utils.deprecation import deprecate_kwarg

        forward_as_native = deprecate_kwarg("past_key_values", version=PAST_KEY_VALUES_REMOVED_IN, new_name="cache")(
            forward
        )

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        if "past_key_values" not in kwargs:
            return forward(self, *args, **kwargs)
        old, new = kwargs["past_key_values"], kwargs.get("cache")
        if old is not None and new is not None and old is not new:
            raise ValueError(
                f"{type(self).__name__} got both `cache` and `past_key_values`, two names of the same argument: "
                "pass the cache once, as `cache` (transformers 5.24 and newer) or `past_key_values`."
            )
        if renamed:
            if new is None:  # `cache=None` beside the old name: the decorator would keep the None
                kwargs.pop("cache", None)
            else:  # the same cache under both names, or a None under the old one
                del kwargs["past_key_values"]
            return forward_as_native(self, *args, **kwargs)
        kwargs.pop("past_key_values")
        if new is None:
            kwargs["cache"] = old
        return forward(self, *args, **kwargs)

    return wrapper


def reject_unknown_kwargs(kwargs: dict, owner: str, also: frozenset = frozenset()) -> None:
    """Raises TypeError for keyword arguments `owner.forward` would otherwise drop unread (see `KNOWN_KWARGS`;
    `also`: more names this forward may be given and need not read)."""
    unknown = sorted(set(kwargs) - KNOWN_KWARGS - also)
    if not unknown:
        return
    names = ", ".join(f"`{name}`" for name in unknown)
    raise TypeError(
        f"{owner}.forward() got unexpected keyword arguments {names}; vaswani would ignore them. Check the spelling "
        f"against help({owner}.forward). If transformers {transformers.__version__} passed them (a newer release than "
        "vaswani supports may rename arguments), install a supported transformers (README, 'Supported versions') "
        "or update vaswani."
    )


def with_cache(cache) -> dict:
    """The keyword that stores `cache` in a transformers output class: `Seq2SeqLMOutput(**with_cache(cache), ...)`."""
    return {OUTPUT_CACHE_FIELD: cache}


def cache_of(outputs):
    """The cache held by a model output, under whichever name the installed transformers gives it."""
    return getattr(outputs, OUTPUT_CACHE_FIELD)


def causal_mask(config, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, cache):
    """transformers' `create_causal_mask`, given the cache under the keyword it takes on this release."""
    return create_causal_mask(
        config=config, inputs_embeds=inputs_embeds, attention_mask=attention_mask, **{MASK_CACHE_NAME: cache}
    )


class CachedDecodingError(RuntimeError):
    """Decoding with the cache gives other results than decoding without it: the installed transformers passes the
    cache in a way this code does not understand."""


@contextlib.contextmanager
def _float32(model):
    """Runs `model` in float32 inside the block and gives it back exactly as it was: without an autocast around
    the call, without the autocast that accelerate wraps around `forward` for mixed-precision training (Trainer
    with `bf16=True`), and with bf16/fp16 weights widened to float32 and narrowed back (exact both ways)."""
    dtypes = {tensor: tensor.dtype for tensor in chain(model.parameters(), model.buffers())
              if tensor.is_floating_point() and tensor.dtype != torch.float32}  # fmt: skip
    wrapped = model.__dict__.get("forward")
    unwrapped = model.__dict__.get("_original_forward")  # accelerate keeps the forward it wrapped here
    try:
        for tensor in dtypes:
            tensor.data = tensor.data.float()
        if unwrapped is not None:
            model.forward = unwrapped
        with torch.autocast(model.device.type, enabled=False):
            yield
    finally:
        for tensor, dtype in dtypes.items():
            tensor.data = tensor.data.to(dtype)
        if unwrapped is not None:
            model.forward = wrapped


@torch.no_grad()
def check_cached_decoding(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          max_new_tokens: int = 24) -> float:  # fmt: skip
    """Checks that `generate` with the cache computes what the model computes without it, and raises
    `CachedDecodingError` (naming the installed transformers) where it does not.

    Decodes greedily with the cache, then scores the same tokens in one teacher-forced pass without a cache: at every
    step the two log-probability distributions must agree to 1e-3. Near-ties cannot make the check fail, as
    comparing two greedy outputs could. A model whose cache is dropped (transformers 5.24 with code written for
    5.23) differs far beyond that from the second step on (0.44 nats on the tests' random tiny model). Works for any
    encoder-decoder model of transformers (also MarianMTModel).

    The check runs in float32 whatever the model's precision (bf16/fp16 weights, autocast, or Trainer's bf16
    wrapper), and leaves the model as it found it: it is about what transformers passes to the model, and in bf16
    the rounding alone moves a trained model's log-probabilities by 0.04-0.3, as much as a dropped cache moves a
    small model's.

    Args:
        model: an encoder-decoder model with `generate`; put back in its training mode afterwards.
        input_ids: a few source sentences, (B, S), e.g. `tokenizer(texts, return_tensors="pt", padding=True)`.
        attention_mask: their mask, (B, S), or None for unpadded ids.
        max_new_tokens: how many decoding steps to compare.

    Returns the largest difference found (in nats).
    """
    was_training = model.training
    model.eval()
    try:
        with _float32(model):
            out = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, do_sample=False,
                                 use_cache=True, max_new_tokens=max_new_tokens, min_new_tokens=2, output_logits=True,
                                 return_dict_in_generate=True)  # fmt: skip
            stepwise = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # (B, n, V)
            decoder_input_ids = out.sequences[:, : stepwise.shape[1]]  # the start token and all but the last token
            whole = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                          use_cache=False).logits.float().log_softmax(-1)  # (B, n, V)  # fmt: skip
    finally:
        model.train(was_training)
    tolerance = 1e-3
    difference = (stepwise - whole).abs().max().item()
    if not difference <= tolerance:  # also catches NaN
        raise CachedDecodingError(
            f"Decoding with the cache gives other results than decoding without it: log-probabilities differ by up "
            f"to {difference:.3g} over {stepwise.shape[1]} steps (tolerance {tolerance:g}) with transformers "
            f"{transformers.__version__} and torch {torch.__version__}. Translations made with the cache (the "
            f"default of generate()) would be wrong. {type(model).__name__} is tested with transformers "
            f"{SUPPORTED_TRANSFORMERS}: install such a release (pip install 'transformers{SUPPORTED_TRANSFORMERS}'), "
            "or update vaswani; a checkpoint saved by an older vaswani gets the current code with "
            "`vaswani-refresh-checkpoint`."
        )
    return difference
