import pytest
import torch
from conftest import random_batch, tiny_model
from transformers import CompileConfig, GenerationConfig, GenerationMixin
from transformers.cache_utils import EncoderDecoderCache

import vaswani
from vaswani.modeling.compat_vaswani import GENERATE_CACHE_NAME, cache_of
from vaswani.modeling.modeling_vaswani import MAX_OUTPUT_LENGTH_OFFSET

DECODING = {
    "greedy": dict(do_sample=False, num_beams=1),
    "beam": dict(do_sample=False, num_beams=4, length_penalty=0.6),
    "sampling": dict(do_sample=True, top_k=20, top_p=0.9, num_beams=1),
}


def generate(model, input_ids, attention_mask, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("max_new_tokens", 12)
    return model.generate(input_ids, attention_mask=attention_mask, **kwargs)


# Encoder and decoder stacks of the preset's equal depth, and of different depths: transformers sizes the decoder's
# caches from `config.get_text_config(decoder=True).num_hidden_layers` (5.24: the decoder's depth), while
# `config.num_hidden_layers` maps to encoder_layers, so a release that read the plain attribute would give a decoder
# deeper than its encoder too few cache layers.
DEPTHS = {"equal": {}, "1+3": dict(encoder_layers=1, decoder_layers=3), "3+1": dict(encoder_layers=3, decoder_layers=1)}


@pytest.mark.parametrize("depths", DEPTHS)
@pytest.mark.parametrize("mode", DECODING)
def test_cached_and_uncached_decoding_give_the_same_tokens(mode, depths):
    model = tiny_model(seed=1, **DEPTHS[depths])
    input_ids, attention_mask = random_batch(batch_size=3, length=8)
    cached = generate(model, input_ids, attention_mask, use_cache=True, **DECODING[mode])
    uncached = generate(model, input_ids, attention_mask, use_cache=False, **DECODING[mode])
    assert torch.equal(cached, uncached)
    assert cached.shape[1] > 2  # something was generated


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_padded_batch_decodes_like_each_example_alone(mode):
    model = tiny_model(seed=2)
    input_ids, attention_mask = random_batch(batch_size=3, length=8)
    batched = generate(model, input_ids, attention_mask, **DECODING[mode])
    for i in range(3):
        n = int(attention_mask[i].sum())
        alone = generate(model, input_ids[i : i + 1, :n], None, **DECODING[mode])
        width = alone.shape[1]
        assert torch.equal(batched[i, :width], alone[0])
        assert (batched[i, width:] == model.config.pad_token_id).all()  # only padding after it finished


def test_cross_attention_keys_and_values_are_computed_once_per_sequence():
    model = tiny_model()
    calls = []
    for layer in model.model.decoder.layers:
        layer.encoder_attn.k_proj.register_forward_hook(lambda m, a, out: calls.append("cross"))
        layer.self_attn.k_proj.register_forward_hook(lambda m, a, out: calls.append("self"))
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    out = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=8, min_new_tokens=8)
    steps = out.shape[1] - 1
    assert steps == 8
    assert calls.count("cross") == len(model.model.decoder.layers)  # once, at the first step
    assert calls.count("self") == steps * len(model.model.decoder.layers)  # once per step: only the new token


def test_num_return_sequences_and_scores():
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    out = model.generate(input_ids, attention_mask=attention_mask, num_beams=4, num_return_sequences=3,
                         max_new_tokens=6, return_dict_in_generate=True, output_scores=True)  # fmt: skip
    assert out.sequences.shape[0] == 6
    assert out.sequences_scores.shape == (6,)
    assert (out.sequences[:, 0] == model.config.decoder_start_token_id).all()


def test_sampling_is_reproducible_with_a_seed_and_varies_without():
    model = tiny_model(seed=3)
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    kwargs = dict(do_sample=True, top_k=50, temperature=2.0, num_beams=1, max_new_tokens=10, min_new_tokens=10)
    first = generate(model, input_ids, attention_mask, seed=7, **kwargs)
    assert torch.equal(first, generate(model, input_ids, attention_mask, seed=7, **kwargs))
    assert not torch.equal(first, generate(model, input_ids, attention_mask, seed=8, **kwargs))


def test_a_model_built_from_a_config_decodes_greedily_and_the_papers_decoding_is_one_line_away():
    """transformers' tools assume greedy decoding unless asked (compiled decoding with a static cache is greedy);
    the paper's beam 4 and length penalty 0.6 (Section 6.1) is `paper_generation_config()`."""
    model = tiny_model()
    input_ids, attention_mask = random_batch()
    assert model.generation_config.num_beams in (None, 1) and model.generation_config.length_penalty in (None, 1.0)
    greedy = dict(num_beams=1, do_sample=False)
    assert torch.equal(generate(model, input_ids, attention_mask), generate(model, input_ids, attention_mask, **greedy))
    paper = vaswani.paper_generation_config()
    assert isinstance(paper, GenerationConfig) and (paper.num_beams, paper.length_penalty) == (4, 0.6)
    beam = generate(model, input_ids, attention_mask, num_beams=4, length_penalty=0.6)
    assert torch.equal(generate(model, input_ids, attention_mask, generation_config=paper), beam)
    on_the_model = vaswani.paper_generation_config(model.generation_config)
    assert on_the_model.decoder_start_token_id == model.generation_config.decoder_start_token_id  # kept from `base`
    assert model.generation_config.num_beams in (None, 1)  # `base` itself is left as it was


def test_the_output_is_bounded_by_input_length_plus_50():
    # Section 6.1: maximum output length = input length + 50 when the caller sets no bound.
    model = tiny_model()
    input_ids = torch.randint(4, 128, (1, 7))
    out = model.generate(input_ids, min_new_tokens=7 + MAX_OUTPUT_LENGTH_OFFSET)
    assert out.shape[1] == 1 + 7 + MAX_OUTPUT_LENGTH_OFFSET
    paper = vaswani.paper_generation_config()
    out = model.generate(input_ids, generation_config=paper, min_new_tokens=7 + MAX_OUTPUT_LENGTH_OFFSET)
    assert out.shape[1] == 1 + 7 + MAX_OUTPUT_LENGTH_OFFSET
    assert model.generate(input_ids, max_new_tokens=3).shape[1] <= 4  # an explicit bound wins


def test_the_bound_goes_into_a_copy_of_a_given_generation_config(monkeypatch):
    """Not beside it as `max_new_tokens=`: transformers warns of a generation config and arguments together."""
    model = tiny_model()
    passed = {}
    monkeypatch.setattr(GenerationMixin, "generate", lambda self, inputs, generation_config, **kwargs: passed.update(
        config=generation_config, **kwargs))  # fmt: skip
    paper = vaswani.paper_generation_config()
    model.generate(torch.randint(4, 128, (1, 7)), generation_config=paper)
    assert "max_new_tokens" not in passed and passed["config"].max_new_tokens == 7 + MAX_OUTPUT_LENGTH_OFFSET
    assert paper.max_new_tokens is None and passed["config"].num_beams == 4  # the caller's config is left alone


def compile_on_a_cpu() -> CompileConfig:
    """generate compiles its decoding step by itself on a GPU; here it is asked to. The "eager" backend runs
    TorchDynamo (its graphs, guards and recompilations) without inductor's minutes of code generation."""
    config = CompileConfig(fullgraph=True, backend="eager")
    config._compile_all_devices = True
    return config


def test_greedy_decoding_with_a_static_cache_compiles_once_and_not_again_for_a_shorter_length():
    """What transformers' test_generate_compile_model_forward_fullgraph and
    test_static_cache_no_recompile_with_smaller_length check: beam search is never compiled automatically, so a
    model whose default was the paper's beam never took this path."""
    check_static_cache_compiles_once(tiny_model("sdpa"), *random_batch(2, 9))


def check_static_cache_compiles_once(model, input_ids, attention_mask) -> None:
    """Greedy decoding with a static cache, the step compiled (full graph) once: the eager tokens, and no
    recompilation for a shorter length. Also run for the decoder-only model (test_causal_lm)."""
    eager = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=10)
    options = dict(cache_implementation="static", compile_config=compile_on_a_cpu())
    torch._dynamo.reset()
    compiled = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=10, **options)
    assert hasattr(model, "_compiled_call")  # the decoding step was compiled, with no graph break (fullgraph)
    assert torch.equal(compiled, eager)
    with torch.compiler.set_stance("fail_on_recompile"):
        shorter = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=6, **options)
    assert torch.equal(shorter, eager[:, : shorter.shape[1]])


def test_continuing_from_the_returned_cache_gives_what_one_call_gives():
    """transformers' test_generate_continue_from_past_key_values: generate, then generate on from the sequences
    and the cache returned, as a chat or a streaming client does."""
    model = tiny_model()
    input_ids, attention_mask = random_batch(2, 9)
    options = dict(attention_mask=attention_mask, return_dict_in_generate=True, output_scores=True)
    whole = model.generate(input_ids, max_new_tokens=8, min_new_tokens=8, **options)
    first = model.generate(input_ids, max_new_tokens=5, min_new_tokens=5, **options)
    cache = cache_of(first)
    assert cache.get_seq_length() == first.sequences.shape[1] - 1  # the last token is not in the cache yet
    # The whole target so far, with its mask: generate feeds the model only what the cache does not hold yet.
    rest = model.generate(input_ids, decoder_input_ids=first.sequences, max_new_tokens=3, min_new_tokens=3,
                          decoder_attention_mask=torch.ones_like(first.sequences), **{GENERATE_CACHE_NAME: cache},
                          **options)  # fmt: skip
    assert torch.equal(rest.sequences, whole.sequences)
    for a, b in zip(first.scores + rest.scores, whole.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_training_builds_no_cache_but_inference_does():
    """Teacher forcing needs no cache; building one anyway cost 21% of a training step."""
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :3])
    model.train()
    assert cache_of(model(**kwargs)) is None
    model.eval()
    cache = cache_of(model(**kwargs))
    assert cache is not None and cache.get_seq_length() == 3


@pytest.mark.parametrize("depths", DEPTHS)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_static_cache_decodes_like_the_dynamic_cache(num_beams, depths):
    model = tiny_model(**DEPTHS[depths])
    input_ids, attention_mask = random_batch()
    kwargs = dict(attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=12, min_new_tokens=12)
    dynamic = model.generate(input_ids, **kwargs)
    static = model.generate(input_ids, cache_implementation="static", **kwargs)
    assert torch.equal(static, dynamic)


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_beam_search_reorders_only_the_self_attention_cache_and_decodes_as_a_full_reorder(cache_implementation):
    """`_reorder_cache` leaves the encoder-decoder keys and values alone (equal for every beam of a sentence);
    the sentences, scores and beam indices are those of transformers' own reordering of the whole cache."""
    model = tiny_model("sdpa")
    input_ids, attention_mask = random_batch(3, 9)  # three different sources, padded differently
    options = dict(num_beams=4, num_return_sequences=2, max_new_tokens=12, output_scores=True,
                   return_dict_in_generate=True, cache_implementation=cache_implementation)  # fmt: skip
    reordered = []
    original = EncoderDecoderCache.reorder_cache

    def spy(cache, beam_idx):
        reordered.append(beam_idx)
        return original(cache, beam_idx)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EncoderDecoderCache, "reorder_cache", spy)
        ours = model.generate(input_ids, attention_mask=attention_mask, **options)
        assert not reordered  # the model's hook ran instead
        patch.delattr(type(model), "_reorder_cache")
        full = model.generate(input_ids, attention_mask=attention_mask, **options)
        assert reordered  # transformers' own: the whole cache
    assert torch.equal(ours.sequences, full.sequences) and torch.equal(ours.beam_indices, full.beam_indices)
    torch.testing.assert_close(ours.sequences_scores, full.sequences_scores)
