"""VaswaniForCausalLM, the decoder stack alone (GPT's shape): architecture, loss, decoding, training, checkpoints, the
Hub and bad input. The tiny preset throughout: seconds per test on a 2-core CPU."""

import json

import pytest
import torch
from conftest import random_batch, tiny_config, tiny_model
from safetensors import safe_open
from test_generation import DECODING, check_static_cache_compiles_once, generate
from test_hub import client, hub  # noqa: F401  (the local Hub-compatible server fixture)
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
    pipeline,
)

import vaswani
from vaswani.modeling.model_card import model_card

F = torch.nn.functional
V = 128  # the tiny preset's vocabulary


def causal_model(attn_implementation: str = "eager", seed: int = 0, **overrides) -> vaswani.VaswaniForCausalLM:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(**overrides), attn_implementation=attn_implementation).eval()


def left_padded(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The right-padded batch of `random_batch` with each row's padding moved to its front."""
    ids, mask = input_ids.clone(), attention_mask.clone()
    for i in range(ids.shape[0]):
        pad = int((attention_mask[i] == 0).sum())
        ids[i], mask[i] = input_ids[i].roll(pad), attention_mask[i].roll(pad)
    return ids, mask


def prompts(batch_size: int = 3, length: int = 8, seed: int = 0):
    """A left-padded batch of prompts (row i has length - 2*i real tokens) and its mask."""
    return left_padded(*random_batch(batch_size, length, seed=seed))


def leaf_calls(model) -> list[str]:
    """Names of the leaf modules (embeddings, linear maps, norms) that run from now on: where work was done."""
    calls = []
    for name, module in model.named_modules():
        if not list(module.children()):
            module.register_forward_pre_hook(lambda m, args, name=name: calls.append(name))
    return calls


# --- 1. architecture ------------------------------------------------------------------------------------------
def test_decoder_only_has_no_encoder_weights_and_ties_its_embeddings():
    config = tiny_config()
    model = vaswani.VaswaniForCausalLM(config)
    names = [*dict(model.named_parameters(remove_duplicate=False)), *model.state_dict()]
    assert not [name for name in names if "encoder" in name]  # neither encoder_attn nor an encoder stack
    assert all(
        layer.encoder_attn is None and layer.encoder_attn_sublayer is None for layer in model.model.decoder.layers
    )
    assert len(model.model.decoder.layers) == config.decoder_layers
    shared = model.model.shared.weight
    assert model.lm_head.weight is shared and model.model.decoder.embed_tokens.weight is shared  # Section 3.4
    assert model.get_input_embeddings().weight is shared and model.get_output_embeddings().weight is shared
    # The caller's config stays a translation config; the model's own copy says decoder-only.
    assert config.is_encoder_decoder is True
    assert model.config.is_encoder_decoder is False and model.model.config.is_encoder_decoder is False
    assert model.model.decoder.config.is_encoder_decoder is False

    untied = causal_model(tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.model.shared.weight
    assert untied.model.decoder.embed_tokens.weight is untied.model.shared.weight  # the input side stays one matrix
    assert not torch.equal(untied.lm_head.weight, untied.model.shared.weight)  # initialised on its own


# --- 2. loss and training -------------------------------------------------------------------------------------
def test_loss_is_the_shifted_cross_entropy_ignoring_minus_100():
    model = causal_model()
    input_ids, attention_mask = random_batch()
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[0, 0] = -100  # the first position is never a target: ignored there too
    labels[1, 1] = -100  # the first target of row 1
    out = model(input_ids, attention_mask=attention_mask, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    # The first label is never scored: any value there gives the same loss.
    other = labels.clone()
    other[:, 0] = 7
    torch.testing.assert_close(model(input_ids, attention_mask=attention_mask, labels=other).loss, out.loss)
    # Section 5.4's label smoothing is torch's on the shifted targets.
    smoothed = model(input_ids, attention_mask=attention_mask, labels=labels, label_smoothing=0.1).loss
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100,
                               label_smoothing=0.1)  # fmt: skip
    torch.testing.assert_close(smoothed, expected)
    assert not torch.allclose(smoothed, out.loss)


def test_loss_with_num_items_in_batch_is_exact_under_gradient_accumulation():
    """Two half batches with different numbers of predicted tokens, each divided by the whole batch's count (of
    shifted targets, as Trainer counts them for a causal LM), give the whole batch's gradient."""
    model = causal_model()
    input_ids, attention_mask = random_batch(batch_size=4, length=8)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    model(input_ids, attention_mask=attention_mask, labels=labels).loss.backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    num_items = (labels[:, 1:] != -100).sum()
    for part in (slice(0, 1), slice(1, 4)):
        model(input_ids[part], attention_mask=attention_mask[part], labels=labels[part],
              num_items_in_batch=num_items).loss.backward()  # fmt: skip
    for before, param in zip(full, model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, before, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """A few hundred short English lines (Python's own documentation topics: in the standard library)."""
    from pydoc_data.topics import topics

    lines = [line.strip() for text in topics.values() for line in text.splitlines()]
    return [line for line in lines if 20 < len(line) < 60 and line.isascii()][:400]


@pytest.fixture(scope="module")
def tokenizer(texts):
    return vaswani.VaswaniTokenizer.train(texts, vocab_size=300, show_progress=False)


def train_with_trainer(tokenizer, texts, folder, batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
    model = causal_model("sdpa", vocab_size=len(tokenizer), dropout=0.0).train()
    dataset = [{"input_ids": ids} for ids in tokenizer(texts[:48]).input_ids]
    args = TrainingArguments(output_dir=str(folder), per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, max_steps=3, learning_rate=1e-3,
                             report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                             disable_tqdm=True, seed=0)  # fmt: skip
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_trainer_with_gradient_accumulation_ends_where_the_doubled_batch_ends(tokenizer, texts, tmp_path):
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    batch = collator([{"input_ids": ids} for ids in tokenizer(texts[:4]).input_ids])
    assert (batch["labels"] == batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).all()
    start = causal_model("sdpa", vocab_size=len(tokenizer), dropout=0.0).state_dict()
    accumulated = train_with_trainer(tokenizer, texts, tmp_path / "a", batch_size=4, accumulation=2)
    doubled = train_with_trainer(tokenizer, texts, tmp_path / "b", batch_size=8, accumulation=1)
    assert not torch.equal(accumulated["model.shared.weight"], start["model.shared.weight"])  # it trained
    for name, tensor in doubled.items():
        torch.testing.assert_close(accumulated[name], tensor, rtol=1e-4, atol=1e-6, msg=name)


# --- 3. generate ------------------------------------------------------------------------------------------------
MODES = {**DECODING, "beam": {**DECODING["beam"], "num_beams": 3}}


@pytest.mark.parametrize("mode", MODES)
def test_cached_and_uncached_decoding_give_the_same_tokens(mode):
    model = causal_model(seed=1)
    input_ids, attention_mask = prompts()
    cached = generate(model, input_ids, attention_mask, use_cache=True, **MODES[mode])
    uncached = generate(model, input_ids, attention_mask, use_cache=False, **MODES[mode])
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, : input_ids.shape[1]], input_ids)  # the prompt, then what was generated
    assert cached.shape[1] > input_ids.shape[1] + 2


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_left_padded_batch_decodes_like_each_prompt_alone(mode):
    model = causal_model(seed=2)
    input_ids, attention_mask = prompts()
    batched = generate(model, input_ids, attention_mask, **MODES[mode])
    for i in range(3):
        pad = int((attention_mask[i] == 0).sum())
        alone = generate(model, input_ids[i : i + 1, pad:], None, **MODES[mode])
        width = alone.shape[1]
        assert torch.equal(batched[i, pad : pad + width], alone[0]), i
        assert (batched[i, pad + width :] == model.config.pad_token_id).all()  # only padding after it finished


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_the_real_positions_logits(side):
    model = causal_model()
    input_ids, attention_mask = random_batch()
    if side == "left":
        input_ids, attention_mask = left_padded(input_ids, attention_mask)
    batched = model(input_ids, attention_mask=attention_mask).logits
    for i in range(3):
        real = attention_mask[i].bool()
        alone = model(input_ids[i : i + 1, real]).logits
        torch.testing.assert_close(batched[i, real], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_static_cache_decodes_like_the_dynamic_cache(num_beams):
    model = causal_model()
    input_ids, attention_mask = prompts()
    kwargs = dict(attention_mask=attention_mask, num_beams=num_beams, max_new_tokens=12, min_new_tokens=12)
    dynamic = model.generate(input_ids, **kwargs)
    static = model.generate(input_ids, cache_implementation="static", **kwargs)
    assert torch.equal(static, dynamic)


def test_greedy_decoding_with_a_static_cache_compiles_and_gives_the_eager_tokens():
    """As test_generation's test for the translation model: the decoding step compiled with TorchDynamo (the
    "eager" backend, no inductor code generation), full graph, once, and not again for a shorter length."""
    check_static_cache_compiles_once(causal_model("sdpa"), *prompts(2, 9))


@pytest.mark.parametrize("cache_implementation", [None, "static"])
def test_learned_positions_past_the_table_are_refused_before_decoding(cache_implementation):
    """10 prompt tokens and 7 new ones feed positions 0..15 (the last token is never fed back): that fits 16 learned
    positions with either cache; an 8th new token would need position 16, refused before the first step, not at
    the 7th. Positions count from each row's first real token, so left padding does not count against the table."""
    model = causal_model(position_embedding_type="learned", max_position_embeddings=16)
    input_ids = torch.randint(4, V, (2, 10), generator=torch.Generator().manual_seed(0))
    options = dict(cache_implementation=cache_implementation)
    assert model.generate(input_ids, max_new_tokens=7, min_new_tokens=7, **options).shape == (2, 17)
    padded = torch.cat([torch.zeros(2, 2, dtype=torch.long), input_ids], dim=1)
    mask = (padded != 0).long()
    mask[1, 2] = 0  # row 1: 9 real tokens
    out = model.generate(padded, attention_mask=mask, max_new_tokens=7, min_new_tokens=7, **options)
    assert torch.equal(out[0, 2:], model.generate(input_ids[:1], max_new_tokens=7, min_new_tokens=7, **options)[0])
    calls = leaf_calls(model)
    with pytest.raises(ValueError, match=r"needs position 16 but learned positions stop at 15 \(`max_position_emb"):
        model.generate(input_ids, max_new_tokens=8, **options)
    with pytest.raises(ValueError, match=r"needs position 16 but learned positions stop at 15"):
        model.generate(input_ids, max_length=18, **options)
    assert not calls  # refused before the first step


# --- 4. attention implementations, checkpointing, outputs --------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"pre_layer_norm": True}])
def test_eager_and_sdpa_agree(overrides):
    input_ids, attention_mask = prompts()
    eager = causal_model("eager", **overrides)
    sdpa = causal_model("sdpa", seed=1, **overrides)
    sdpa.load_state_dict(eager.state_dict())
    real = attention_mask.bool()  # a left-padded row's padding attends to nothing: its vectors are unused
    torch.testing.assert_close(sdpa(input_ids, attention_mask=attention_mask).logits[real],
                               eager(input_ids, attention_mask=attention_mask).logits[real], rtol=1e-5, atol=1e-5)  # fmt: skip


def test_gradient_checkpointing_gives_the_same_gradients():
    model = causal_model(dropout=0.0).train()
    input_ids, attention_mask = random_batch()
    batch = dict(
        input_ids=input_ids, attention_mask=attention_mask, labels=input_ids.masked_fill(attention_mask == 0, -100)
    )
    model(**batch).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    runs = []
    model.model.decoder.layers[0].feed_forward.register_forward_hook(lambda m, a, out: runs.append(1))  # inside
    model(**batch).loss.backward()
    assert len(runs) == 2  # the layer's activations were not kept: it ran again in the backward pass
    for before, param in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, before, rtol=1e-5, atol=1e-6)


def test_outputs_attentions_and_hidden_states():
    model = causal_model()
    input_ids, attention_mask = prompts(2, 6)
    out = model(input_ids, attention_mask=attention_mask, output_attentions=True, output_hidden_states=True)
    layers, heads = 2, 4
    assert len(out.attentions) == layers and all(a.shape == (2, heads, 6, 6) for a in out.attentions)
    assert len(out.hidden_states) == layers + 1 and all(h.shape == (2, 6, 32) for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], model.model(input_ids, attention_mask=attention_mask).last_hidden_state)
    queries = attention_mask.bool()[:, None, :, None]  # (B, 1, T, 1); a padded query attends to nothing: unused
    for attentions in out.attentions:
        # Causal (Section 3.2.3): no real query attends to a later position, nor to padding.
        assert torch.all((attentions.triu(diagonal=1) * queries) == 0)
        assert torch.all(attentions[1][:, attention_mask[1].bool()][..., attention_mask[1] == 0] == 0)
        torch.testing.assert_close(attentions.sum(-1), torch.ones(2, heads, 6))


# --- 5. checkpoints -------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    model = causal_model(pre_layer_norm=True)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(loaded) is vaswani.VaswaniForCausalLM
    input_ids, attention_mask = prompts()
    assert torch.equal(loaded(input_ids, attention_mask=attention_mask).logits,
                       model(input_ids, attention_mask=attention_mask).logits)  # fmt: skip
    assert loaded.lm_head.weight is loaded.model.shared.weight is loaded.model.decoder.embed_tokens.weight
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["is_encoder_decoder"] is False
    assert config["auto_map"]["AutoModel"] == "modeling_vaswani.VaswaniDecoderModel"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_vaswani.VaswaniForCausalLM"
    assert "custom_pipelines" not in config  # the translation pipelines are not this model's
    # AutoModel (with the plugin: VaswaniModel's from_pretrained decides) gives the decoder, not an encoder-decoder.
    base, info = AutoModel.from_pretrained(tmp_path, output_loading_info=True)
    assert type(base) is vaswani.VaswaniDecoderModel and not info["missing_keys"], info


def test_text_generation_pipeline(tokenizer, tmp_path):
    """The folder holds the model and its tokenizer set for prompts (`<s>` first, no `</s>` at the end), as
    train_language_model saves them; the pipeline continues the prompt with the model's own greedy tokens."""
    model = causal_model(vocab_size=len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tmp_path, add_bos_token=True, add_eos_token=False).save_pretrained(tmp_path)
    generator = pipeline("text-generation", model=str(tmp_path), tokenizer=str(tmp_path))
    assert type(generator.model) is vaswani.VaswaniForCausalLM
    prompt = "The assert statement"
    output = generator(prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert isinstance(output, str) and output.startswith(prompt) and len(output) > len(prompt)
    ids = generator(prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False, return_tensors=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    prompt_ids = torch.cat([torch.tensor([[tokenizer.bos_token_id]]), prompt_ids], dim=1)
    expected = model.generate(
        prompt_ids, attention_mask=torch.ones_like(prompt_ids), max_new_tokens=5, min_new_tokens=5
    )
    assert ids[0]["generated_token_ids"] == expected[0].tolist()


# --- 6. the Hub, and remote code without the plugin ------------------------------------------------------------
LOAD_CAUSAL = """
    from transformers import AutoModel, AutoModelForCausalLM
    trust = not args["plugin"]  # without the plugin, `import vaswani` raises ImportError here (PRELUDE)
    if args["plugin"]:
        import vaswani
        from huggingface_hub import HfApi
        AutoModelForCausalLM.from_pretrained(args["folder"]).push_to_hub(args["repo"])
        files = HfApi().list_repo_files(args["repo"])
    input_ids, attention_mask = torch.tensor(args["input_ids"]), torch.tensor(args["attention_mask"])
    loaded = {}
    # From the Hub into this process's empty cache (HF_HOME), as on a machine that never saw the model; and the folder.
    for where, source in (("hub", args["repo"]), ("folder", args["folder"])):
        model = AutoModelForCausalLM.from_pretrained(source, trust_remote_code=trust, attn_implementation="eager")
        loaded[where] = dict(
            cls=type(model).__name__, module=type(model).__module__,
            base=type(AutoModel.from_pretrained(source, trust_remote_code=trust)).__name__,
            logits=model.eval()(input_ids, attention_mask=attention_mask).logits.tolist(),
            tokens=[model.generate(input_ids, attention_mask=attention_mask, num_beams=n, max_new_tokens=10).tolist()
                    for n in (1, 3)])
    report(files=files if args["plugin"] else None, loaded=loaded)
"""


def test_push_pull_and_remote_code_without_the_plugin(hub, tmp_path):  # noqa: F811
    """`push_to_hub` with the plugin, then two fresh interpreters load the Hub repository (into an empty cache) and
    the saved folder: one with the plugin, one where vaswani cannot be imported (`trust_remote_code=True`, the
    mechanism of test_checkpoint's REMOTE_LOAD). Every load gives the model's logits exactly and its greedy and beam
    tokens."""
    model = causal_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    input_ids, attention_mask = prompts()
    expected = model(input_ids, attention_mask=attention_mask).logits
    tokens = [model.generate(input_ids, attention_mask=attention_mask, num_beams=n, max_new_tokens=10).tolist()
              for n in (1, 3)]  # fmt: skip
    inputs = dict(repo=hub.repo("causal"), folder=str(folder), input_ids=input_ids.tolist(),
                  attention_mask=attention_mask.tolist())  # fmt: skip
    with_plugin = client(hub, tmp_path, LOAD_CAUSAL, plugin=True, **inputs)
    assert {"model.safetensors", "config.json", "modeling_vaswani.py", "configuration_vaswani.py",
            "README.md"} <= set(with_plugin["files"])  # fmt: skip
    without_plugin = client(hub, tmp_path, LOAD_CAUSAL, plugin=False, **inputs)
    for result, plugin in ((with_plugin, True), (without_plugin, False)):
        for where, loaded in result["loaded"].items():
            assert loaded["cls"] == "VaswaniForCausalLM", where
            if not plugin:  # auto_map's AutoModel (the plugin registers VaswaniModel, the translation model's base)
                assert loaded["base"] == "VaswaniDecoderModel", where
            assert loaded["module"].startswith("transformers_modules.") != plugin, (where, loaded["module"])
            assert torch.equal(torch.tensor(loaded["logits"]), expected), (where, plugin)
            assert loaded["tokens"] == tokens, (where, plugin)


def test_model_card_describes_a_text_generation_model():
    """The card the plugin's `push_to_hub` writes (checkpoint_vaswani.push_with_model_card) fits the decoder-only
    shape: its task, its stack and its Auto class, none of the translation model's."""
    model = causal_model()
    card = model_card(model, "user/tiny-causal")
    assert card.data.pipeline_tag == "text-generation" and "translation" not in card.data.tags
    assert "AutoModelForCausalLM" in card.text and "AutoModelForSeq2SeqLM" not in card.text
    assert "encoder + decoder" not in card.text and "| decoder layers | 2 |" in card.text
    assert f"| parameters | {model.num_parameters():,} |" in card.text


# --- 7. bad input ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(input_ids=torch.tensor([[5, 128]])), ValueError, r"`input_ids` contains token id 128, outside the vocabulary \[0, 128\)"),
        (dict(input_ids=torch.tensor([[5, 6, 7]]), labels=torch.tensor([[5, 6]])), ValueError, r"`labels` has shape \(1, 2\) but the inputs have \(1, 3\)"),
        (dict(input_ids=torch.tensor([[5, 6]]), labels=torch.tensor([[5, 300]])), ValueError, r"`labels` contains 300, outside the vocabulary"),
        (dict(input_ids=torch.tensor([[5, 6]]), encoder_hidden_states=torch.zeros(1, 4, 32)), TypeError, r"unexpected keyword arguments `encoder_hidden_states`"),
        (dict(input_ids=torch.zeros(2, 0, dtype=torch.long)), ValueError, r"`input_ids` holds empty sequences"),
        (dict(input_ids=torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3)), ValueError, r"`attention_mask` has shape \(1, 3\)"),
        (dict(input_ids=torch.tensor([[5, 6]]), decoder_input_ids=torch.tensor([[1]])), TypeError, r"unexpected keyword arguments `decoder_input_ids`"),
        (dict(input_ids=torch.tensor([[5, 6]]), label_smoothing=1.0), ValueError, r"`label_smoothing` is 1.0"),
    ],
    ids=["token-id", "labels-shape", "labels-id", "encoder-states", "empty", "mask-shape", "unknown-keyword", "smoothing"],
)  # fmt: skip
def test_bad_input_raises_a_clear_error_before_any_work(kwargs, error, message):
    model = causal_model()
    calls = leaf_calls(model)
    with pytest.raises(error, match=message):
        model(**kwargs)
    assert not calls, calls


def test_the_decoder_without_encoder_attention_refuses_encoder_states():
    model = causal_model()
    calls = leaf_calls(model)
    with pytest.raises(ValueError, match="no encoder-decoder attention .*VaswaniForCausalLM"):
        model.model.decoder(torch.tensor([[5, 6]]), encoder_hidden_states=torch.zeros(1, 4, 32))
    assert not calls


# --- 8. a translation checkpoint's decoder --------------------------------------------------------------------
def test_a_translation_checkpoints_decoder_loads_into_the_causal_lm(tmp_path):
    translation = tiny_model()
    translation.save_pretrained(tmp_path)
    model, info = vaswani.VaswaniForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(model) is vaswani.VaswaniForCausalLM and model.config.is_encoder_decoder is False
    source = translation.state_dict()
    target = model.state_dict()
    carried = [name for name in target if name.startswith("model.decoder.layers.")]
    assert carried and not any("encoder_attn" in name for name in carried)
    assert any(".self_attn." in name for name in carried) and any(".feed_forward." in name for name in carried)
    for name in [*carried, "model.shared.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"]:
        assert torch.equal(target[name], source[name]), name
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        stored = set(weights.keys())
    # Reported unused: exactly the stored encoder and encoder-decoder attention weights, both kinds present.
    assert set(info["unexpected_keys"]) == {name for name in stored if ".encoder_attn" in name or name.startswith(
        "model.encoder.")}  # fmt: skip
    assert any("encoder_attn" in name for name in info["unexpected_keys"])
    assert any(name.startswith("model.encoder.layers.") for name in info["unexpected_keys"])
    assert not info["missing_keys"] and not info["mismatched_keys"]
