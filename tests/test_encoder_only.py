"""The encoder stack alone (BERT's shape): `VaswaniEncoderModel`, `VaswaniForMaskedLM`,
`VaswaniForSequenceClassification`, `VaswaniForTokenClassification`.

Architecture and ties, losses against torch's own, padding, Trainer, attention implementations, what carries over
between checkpoints (masked LM -> classifier, translation model -> sentence encoder), save/load with and without the
plugin, pipelines, the Hub, and bad input.
"""

import json
import logging
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import random_batch, tiny_config, tiny_model
from test_hub import client, hub  # noqa: F401  (`hub`: the module's Hub fixture, the local test server)
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainingArguments,
    pipeline,
)
from transformers.utils import logging as hf_logging

import vaswani
from vaswani import (
    VaswaniEncoderModel,
    VaswaniForMaskedLM,
    VaswaniForSequenceClassification,
    VaswaniForTokenClassification,
)
from vaswani.modeling.modeling_vaswani import mean_over_tokens

HEADS = (VaswaniForMaskedLM, VaswaniForSequenceClassification, VaswaniForTokenClassification)
CLASSES = (VaswaniEncoderModel, *HEADS)
AUTO = {VaswaniEncoderModel: AutoModel, VaswaniForMaskedLM: AutoModelForMaskedLM,
        VaswaniForSequenceClassification: AutoModelForSequenceClassification,
        VaswaniForTokenClassification: AutoModelForTokenClassification}  # fmt: skip
TASKS = {VaswaniEncoderModel: "feature-extraction", VaswaniForMaskedLM: "fill-mask",
         VaswaniForSequenceClassification: "text-classification",
         VaswaniForTokenClassification: "token-classification"}  # fmt: skip
ids_of = {cls: cls.__name__ for cls in CLASSES}.get


def build(cls, attn_implementation: str = "eager", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls._from_config(tiny_config(**overrides), attn_implementation=attn_implementation).eval()


def encoder_of(model) -> VaswaniEncoderModel:
    return model if isinstance(model, VaswaniEncoderModel) else model.model


def main_output(outputs) -> torch.Tensor:
    """What each class gives per sequence: hidden states (base), logits (heads)."""
    return outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs.logits


def labels_for(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Labels of the right kind for each head: masked-LM targets at a few real positions, one class per sequence,
    a class per real token (-100 on padding)."""
    generator = torch.Generator().manual_seed(seed)
    if isinstance(model, VaswaniForSequenceClassification):
        return torch.randint(0, model.config.num_labels, (input_ids.shape[0],), generator=generator)
    if isinstance(model, VaswaniForTokenClassification):
        labels = torch.randint(0, model.config.num_labels, input_ids.shape, generator=generator)
        return labels.masked_fill(attention_mask == 0, -100)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.4) & (attention_mask == 1)
    chosen[:, 0] = True  # at least one per row
    return input_ids.masked_fill(~chosen, -100)


def same_weights(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[key], b[key]) for key in keys)


# ---- 1. architecture --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_encoder_only_models_have_no_decoder_and_leave_the_callers_config_alone(cls):
    config = tiny_config()
    before = config.to_dict()
    model = cls(config)
    assert config.to_dict() == before and config.is_encoder_decoder  # the caller's config, untouched
    assert model.config.is_encoder_decoder is False and model.config is not config
    names = list(model.state_dict())
    assert not any("decoder" in name for name in names), names
    prefix = "" if cls is VaswaniEncoderModel else "model."
    assert f"{prefix}shared.weight" in names and f"{prefix}encoder.layers.1.self_attn.q_proj.weight" in names
    encoder = encoder_of(model)
    assert encoder.encoder.embed_tokens.weight is encoder.shared.weight
    # The same encoder as the translation model's: as many parameters, by the same names.
    translation = tiny_model()
    assert encoder.num_parameters() == translation.get_encoder().num_parameters()
    assert {name for name in names if name.startswith(f"{prefix}encoder.")} == {
        f"{prefix}encoder.{name}" for name in translation.get_encoder().state_dict()
    }


def test_masked_lm_output_projection_is_the_embedding_matrix():
    model = VaswaniForMaskedLM(tiny_config())
    assert model.lm_head.weight is model.model.shared.weight is model.model.encoder.embed_tokens.weight
    assert model.get_output_embeddings() is model.lm_head
    assert model.get_input_embeddings().weight is model.lm_head.weight
    model.resize_token_embeddings(130)  # after adding a mask token to the tokenizer
    assert model.lm_head.weight is model.model.shared.weight is model.model.encoder.embed_tokens.weight
    assert model.config.vocab_size == 130 and model(torch.tensor([[129, 5]])).logits.shape == (1, 2, 130)


def test_parameter_counts_are_encoder_plus_head():
    config = tiny_config(num_labels=5)
    encoder = VaswaniEncoderModel(config).num_parameters()
    d_model, labels = config.d_model, 5
    assert VaswaniForMaskedLM(config).num_parameters() == encoder  # the head is the embedding matrix
    assert VaswaniForSequenceClassification(config).num_parameters() == encoder + d_model * labels + labels
    assert VaswaniForTokenClassification(config).num_parameters() == encoder + d_model * labels + labels


# ---- 2. losses and pooling --------------------------------------------------------------------------------------
def test_masked_lm_loss_is_cross_entropy_over_labelled_positions():
    model = build(VaswaniForMaskedLM)
    input_ids, attention_mask = random_batch(batch_size=3, length=9)
    labels = labels_for(model, input_ids, attention_mask)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    flat_logits, flat_labels = out.logits.view(-1, model.config.vocab_size), labels.view(-1)
    torch.testing.assert_close(out.loss, F.cross_entropy(flat_logits, flat_labels, ignore_index=-100))
    summed = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
    with_items = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=50)
    torch.testing.assert_close(with_items.loss, summed / 50)


@pytest.mark.parametrize(
    "num_labels, labels, problem_type, torch_loss",
    [
        (1, torch.tensor([0.5, -1.0, 2.0]), "regression", lambda logits, y: F.mse_loss(logits.squeeze(-1), y)),
        (4, torch.tensor([3, 0, 2]), "single_label_classification", F.cross_entropy),
        (3, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), "multi_label_classification",
         F.binary_cross_entropy_with_logits),
    ],
    ids=["regression", "single-label", "multi-label"],
)  # fmt: skip
def test_sequence_classification_losses_follow_problem_type(num_labels, labels, problem_type, torch_loss):
    model = build(VaswaniForSequenceClassification, num_labels=num_labels)
    assert model.config.problem_type is None
    input_ids, attention_mask = random_batch(batch_size=3, length=7)
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (3, num_labels)
    torch.testing.assert_close(out.loss, torch_loss(out.logits, labels))
    assert model.config.problem_type == problem_type  # inferred from the labels and kept, as transformers does


def test_token_classification_loss_is_cross_entropy_over_labelled_tokens():
    model = build(VaswaniForTokenClassification, num_labels=5)
    input_ids, attention_mask = random_batch(batch_size=3, length=9)
    labels = labels_for(model, input_ids, attention_mask)
    labels[0, 1] = -100  # a word's later piece
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    assert out.logits.shape == (3, 9, 5)
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits.view(-1, 5), labels.view(-1), ignore_index=-100))
    summed = F.cross_entropy(out.logits.view(-1, 5), labels.view(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                                     num_items_in_batch=40).loss, summed / 40)  # fmt: skip


def test_mean_over_tokens_counts_real_tokens_only():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float).view(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_over_tokens(hidden, mask)
    torch.testing.assert_close(pooled, torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)]))
    torch.testing.assert_close(mean_over_tokens(hidden, None), hidden.mean(1))
    assert torch.equal(mean_over_tokens(hidden, torch.zeros(2, 4)), torch.zeros(2, 3))  # no real token: zeros


@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_right_padding_changes_nothing(cls):
    """Positions count from 0 at the first column (as BERT's), so right padding is invariant: each row of a
    right-padded batch gives what it gives alone (per real token; the pooled logits for the sequence head)."""
    model = build(cls)
    input_ids, attention_mask = random_batch(batch_size=3, length=9)
    with torch.no_grad():
        batched = main_output(model(input_ids=input_ids, attention_mask=attention_mask))
        other_padding = input_ids.masked_fill(attention_mask == 0, 7)  # masked: what stands there does not matter
        other = main_output(model(input_ids=other_padding, attention_mask=attention_mask))
        real = slice(None) if cls is VaswaniForSequenceClassification else attention_mask == 1
        torch.testing.assert_close(other[real], batched[real], rtol=0, atol=1e-5)
        for i in range(3):
            n = int(attention_mask[i].sum())
            alone = main_output(model(input_ids=input_ids[i : i + 1, :n]))
            if cls is VaswaniForSequenceClassification:
                torch.testing.assert_close(batched[i], alone[0], rtol=0, atol=1e-5)
            else:
                torch.testing.assert_close(batched[i, :n], alone[0], rtol=0, atol=1e-5)


# ---- 3. Trainer -------------------------------------------------------------------------------------------------
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "in", "park", "mat", "house", "red", "big", "small", "old",
         "tree"]  # fmt: skip


def word_task(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Sentences of random words; label 1 where "apple" is one of them (half of them)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 7))
        if i % 2:
            words.insert(rng.randint(0, len(words)), "apple")
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


@pytest.fixture(scope="module")
def tokenizer():
    """A tiny tokenizer with a mask token (after the trained vocabulary)."""
    texts, _ = word_task(200, seed=0)
    tokenizer = vaswani.VaswaniTokenizer.train(texts, vocab_size=300, show_progress=False)
    size = len(tokenizer)
    tokenizer.add_special_tokens({"mask_token": "<mask>"})
    assert tokenizer.mask_token_id == size and len(tokenizer) == size + 1
    return tokenizer


def quiet_args(folder, **overrides) -> TrainingArguments:
    return TrainingArguments(output_dir=str(folder), report_to=[], save_strategy="no", logging_strategy="no",
                             disable_tqdm=True, use_cpu=True, seed=0, learning_rate=1e-2, lr_scheduler_type="constant",
                             **overrides)  # fmt: skip


def test_sequence_classification_fine_tunes_with_trainer(tokenizer, tmp_path):
    train_texts, train_labels = word_task(256, seed=1)
    test_texts, test_labels = word_task(64, seed=2)
    train = [{**tokenizer(t), "labels": y} for t, y in zip(train_texts, train_labels, strict=True)]
    torch.manual_seed(0)
    model = VaswaniForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2, dropout=0.0))

    def accuracy() -> float:
        model.eval()
        with torch.no_grad():
            batch = tokenizer(test_texts, padding=True, return_tensors="pt")
            predicted = model(**batch).logits.argmax(-1)
        return (predicted == torch.tensor(test_labels)).float().mean().item()

    before = accuracy()
    args = quiet_args(tmp_path, per_device_train_batch_size=16, max_steps=16)
    Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer).train()  # pads per batch
    after = accuracy()
    assert before <= 0.6 and after >= 0.75, (before, after)  # chance is 0.5


def test_masked_lm_trains_with_the_mlm_collator(tokenizer, tmp_path):
    texts, _ = word_task(128, seed=3)
    torch.manual_seed(0)
    model = VaswaniForMaskedLM(tiny_config(vocab_size=len(tokenizer), dropout=0.0))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.3)
    examples = [tokenizer(t) for t in texts]
    torch.manual_seed(5)
    held_out = collator([tokenizer(t) for t in word_task(32, seed=4)[0]])  # sentences it does not train on
    assert (held_out["input_ids"] == tokenizer.mask_token_id).any() and (held_out["labels"] != -100).any()

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**held_out).loss.item()

    before = loss()
    args = quiet_args(tmp_path, per_device_train_batch_size=16, max_steps=8)
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collator).train()
    after = loss()
    assert after < before - 1.0, (before, after)


# ---- 4. attention implementations, checkpointing, outputs -------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_eager_and_sdpa_agree(cls):
    input_ids, attention_mask = random_batch()
    eager = build(cls, "eager")
    sdpa = build(cls, "sdpa", seed=1)
    sdpa.load_state_dict(eager.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(main_output(sdpa(input_ids=input_ids, attention_mask=attention_mask)),
                                   main_output(eager(input_ids=input_ids, attention_mask=attention_mask)),
                                   rtol=0, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_inputs_embeds_and_fully_padded_rows(cls):
    """Embedding rows given instead of ids give the same outputs; a row that is all padding gives numbers, not NaN,
    with either attention implementation."""
    input_ids, attention_mask = random_batch()
    attention_mask[1] = 0
    for attn_implementation in ("eager", "sdpa"):
        model = build(cls, attn_implementation)
        with torch.no_grad():
            by_ids = main_output(model(input_ids=input_ids, attention_mask=attention_mask))
            embeds = model.get_input_embeddings()(input_ids)
            by_embeds = main_output(model(inputs_embeds=embeds, attention_mask=attention_mask))
        assert torch.equal(by_embeds, by_ids) and torch.isfinite(by_ids).all(), attn_implementation


@pytest.mark.parametrize("cls", HEADS, ids=ids_of)
def test_gradient_checkpointing_gives_the_same_gradients(cls):
    model = build(cls, dropout=0.0).train()
    input_ids, attention_mask = random_batch()
    batch = dict(input_ids=input_ids, attention_mask=attention_mask,
                 labels=labels_for(model, input_ids, attention_mask))  # fmt: skip
    model(**batch).loss.backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(**batch).loss.backward()
    for before, param in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, before, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_attentions_and_hidden_states(cls):
    model = build(cls, "eager")
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True, output_hidden_states=True)
    layers, heads, d_model = 2, 4, 32
    assert len(out.attentions) == layers and all(a.shape == (2, heads, 6, 6) for a in out.attentions)
    assert len(out.hidden_states) == layers + 1 and all(h.shape == (2, 6, d_model) for h in out.hidden_states)
    assert torch.all(out.attentions[0][1, :, :, attention_mask[1] == 0] == 0)  # no attention to padding
    torch.testing.assert_close(out.attentions[1].sum(-1), torch.ones(2, heads, 6))


# ---- 5. weights carried over --------------------------------------------------------------------------------------
@pytest.fixture
def transformers_warnings(caplog):
    """transformers' log records (its loggers do not propagate by default)."""
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            yield caplog
    finally:
        hf_logging.disable_propagation()


def test_a_masked_lm_checkpoint_loads_into_a_classifier(tmp_path, transformers_warnings):
    masked = build(VaswaniForMaskedLM)
    masked.save_pretrained(tmp_path)
    classifier, info = VaswaniForSequenceClassification.from_pretrained(tmp_path, num_labels=3,
                                                                        output_loading_info=True)  # fmt: skip
    assert classifier.config.num_labels == 3 and classifier.classifier.weight.shape == (3, 32)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert set(info["unexpected_keys"]) == set()  # lm_head is the embedding matrix: saved once, as model.shared
    assert not info["mismatched_keys"]
    saved, loaded = masked.state_dict(), classifier.state_dict()
    encoder_keys = [key for key in saved if key.startswith("model.")]
    assert len(encoder_keys) == len([key for key in loaded if key.startswith("model.")])
    assert same_weights(saved, loaded, encoder_keys)
    assert not torch.equal(classifier.classifier.weight, torch.zeros(3, 32))  # initialised, not left empty
    report = "\n".join(record.getMessage() for record in transformers_warnings.records)
    assert "VaswaniForSequenceClassification LOAD REPORT" in report and "classifier.weight" in report
    assert "MISSING" in report


@pytest.mark.parametrize("cls", [VaswaniEncoderModel, VaswaniForSequenceClassification], ids=ids_of)
def test_a_translation_checkpoint_gives_its_encoder(cls, tmp_path):
    translation = tiny_model()
    translation.save_pretrained(tmp_path)
    model, info = cls.from_pretrained(tmp_path, output_loading_info=True, attn_implementation="eager")
    model.eval()
    assert model.config.is_encoder_decoder is False
    assert any(key.startswith("model.decoder.") for key in info["unexpected_keys"])  # the decoder is not used
    source = {f"model.{key}": value for key, value in translation.model.state_dict().items()}
    prefix = "" if cls is VaswaniEncoderModel else "model."
    loaded = {f"model.{key[len(prefix):]}": value for key, value in model.state_dict().items()
              if key.startswith(prefix)}  # fmt: skip
    encoder_keys = [key for key in loaded if key.startswith(("model.encoder.", "model.shared."))]
    assert "model.encoder.layers.1.feed_forward.fc2.weight" in encoder_keys
    assert same_weights(source, loaded, encoder_keys)
    if cls is VaswaniEncoderModel:  # a sentence encoder from a trained translation model
        assert not info["missing_keys"]
        input_ids, attention_mask = random_batch()
        with torch.no_grad():
            expected = translation.get_encoder()(input_ids, attention_mask=attention_mask).last_hidden_state
            got = model(input_ids, attention_mask=attention_mask).last_hidden_state
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    else:
        assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    # Saved again, it is an encoder-only checkpoint: no translation pipelines, the encoder as its AutoModel.
    model.save_pretrained(tmp_path / "resaved")
    config = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert config["architectures"] == [cls.__name__] and config["is_encoder_decoder"] is False
    assert "custom_pipelines" not in config
    assert config["auto_map"]["AutoModel"] == "modeling_vaswani.VaswaniEncoderModel"


# ---- 6. save and load, with and without the plugin; 8. the Hub ----------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One saved folder per class, and the outputs of the model that saved it for `random_batch()`."""
    root = tmp_path_factory.mktemp("saved")
    input_ids, attention_mask = random_batch()
    folders = {}
    for cls in CLASSES:
        model = build(cls, "sdpa", num_labels=3)
        with torch.no_grad():
            expected = main_output(model(input_ids=input_ids, attention_mask=attention_mask))
        folder = root / cls.__name__
        model.save_pretrained(folder)
        folders[cls] = (folder, expected)
    return folders


@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_save_and_load_through_the_auto_class(cls, saved):
    folder, expected = saved[cls]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [cls.__name__] and config["is_encoder_decoder"] is False
    assert config["auto_map"]["AutoModel"] == "modeling_vaswani.VaswaniEncoderModel"
    assert config["auto_map"][AUTO[cls].__name__] == f"modeling_vaswani.{cls.__name__}"
    assert "custom_pipelines" not in config  # the translation pipelines are the translation model's
    # In process AutoModel maps the "vaswani" config to the translation base model (VaswaniModel): the encoder is
    # loaded by its class (auto_map's AutoModel serves remote code, below).
    auto = VaswaniEncoderModel if cls is VaswaniEncoderModel else AUTO[cls]
    loaded = auto.from_pretrained(folder).eval()
    assert type(loaded) is cls
    if cls is VaswaniForMaskedLM:
        assert loaded.lm_head.weight is loaded.model.shared.weight is loaded.model.encoder.embed_tokens.weight
    input_ids, attention_mask = random_batch()
    with torch.no_grad():
        assert torch.equal(main_output(loaded(input_ids=input_ids, attention_mask=attention_mask)), expected)


WITHOUT_PLUGIN = """
    import transformers
    from huggingface_hub import HfApi
    inputs = dict(input_ids=torch.tensor(args["input_ids"]), attention_mask=torch.tensor(args["mask"]))

    def outputs(model):
        with torch.no_grad():
            out = model(**inputs)
        return (out.last_hidden_state if type(model).__name__ == "VaswaniEncoderModel" else out.logits).tolist()

    local, types = {}, {}
    for name, (folder, auto) in args["models"].items():  # every class, from its folder, as remote code
        model = getattr(transformers, auto).from_pretrained(folder, trust_remote_code=True).eval()
        types[name] = [type(model).__name__, type(model).__module__.split(".")[0]]
        local[name] = outputs(model)
        if name == "VaswaniForSequenceClassification":
            model.push_to_hub(args["repo"])  # remote code's push_to_hub: transformers' own, with no tags given
    pulled = transformers.AutoModelForSequenceClassification.from_pretrained(
        args["repo"], trust_remote_code=True, cache_dir=args["home"] + "/fresh").eval()
    report(types=types, local=local, pulled=outputs(pulled), pulled_type=type(pulled).__name__,
           files=HfApi().list_repo_files(args["repo"]))
"""


@pytest.fixture(scope="module")
def without_plugin(hub, saved, tmp_path_factory):  # noqa: F811
    """One client process where `import vaswani` fails (to save time, for all of this): every class loaded from its
    folder with `trust_remote_code=True` and run on `random_batch()`; the classifier pushed to `hub` and pulled from
    it into a fresh cache."""
    input_ids, attention_mask = random_batch()
    models = {cls.__name__: (str(folder), AUTO[cls].__name__) for cls, (folder, _) in saved.items()}
    return client(hub, tmp_path_factory.mktemp("without_plugin"), WITHOUT_PLUGIN, plugin=False, models=models,
                  repo=hub.repo("classifier"), input_ids=input_ids.tolist(), mask=attention_mask.tolist())  # fmt: skip


def test_every_class_loads_with_trust_remote_code_without_vaswani(without_plugin, saved):
    for cls, (_, expected) in saved.items():
        assert without_plugin["types"][cls.__name__] == [cls.__name__, "transformers_modules"]
        assert torch.equal(torch.tensor(without_plugin["local"][cls.__name__]), expected), cls.__name__


def test_a_classifier_pushed_to_the_hub_and_pulled_gives_the_same_logits(without_plugin, saved):
    _, expected = saved[VaswaniForSequenceClassification]
    assert without_plugin["pulled_type"] == "VaswaniForSequenceClassification"
    assert {"model.safetensors", "config.json", "modeling_vaswani.py", "configuration_vaswani.py"} <= set(
        without_plugin["files"]
    )
    assert torch.equal(torch.tensor(without_plugin["pulled"]), expected)


@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_the_plugins_model_card_fits_an_encoder_only_model(cls):
    """`push_to_hub` with the plugin installed writes vaswani's card (checkpoint_vaswani.push_with_model_card): it
    should name the model's own task."""
    from vaswani.modeling.model_card import model_card

    card = model_card(cls(tiny_config()), "me/encoder")
    assert card.data.pipeline_tag == TASKS[cls]
    assert f'{AUTO[cls].__name__}.from_pretrained("me/encoder")' in card.text


def test_automodel_with_the_plugin_gives_the_encoder_of_an_encoder_only_checkpoint(saved):
    """What the model card of a `VaswaniEncoderModel` tells users to run."""
    for cls in (VaswaniEncoderModel, VaswaniForMaskedLM, VaswaniForSequenceClassification):
        folder, _ = saved[cls]
        model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
        assert type(model) is VaswaniEncoderModel and not info["missing_keys"], (cls, info)


# ---- 7. pipelines ---------------------------------------------------------------------------------------------------
def test_pipelines(tokenizer):
    """Each pipeline returns its usual structure, and what it says is what the model computes."""
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    config = tiny_config(vocab_size=len(tokenizer), id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    masked_lm = VaswaniForMaskedLM(config).eval()
    text = "the cat <mask> on the mat"
    ids = tokenizer(text, return_tensors="pt").input_ids
    (where,) = (ids[0] == tokenizer.mask_token_id).nonzero()[0]  # the typed "<mask>" is the mask token, once
    with torch.no_grad():
        probs = masked_lm(ids).logits[0, where].softmax(-1)
    guesses = pipeline("fill-mask", model=masked_lm, tokenizer=tokenizer)(text, top_k=3)
    assert [g["token"] for g in guesses] == probs.topk(3).indices.tolist()
    for guess in guesses:
        assert guess["score"] == pytest.approx(probs[guess["token"]].item(), abs=1e-6)
        filled = ids[0].clone()
        filled[where] = guess["token"]
        assert guess["sequence"] == tokenizer.decode(filled, skip_special_tokens=True)
        assert guess["token_str"] == tokenizer.decode([guess["token"]])

    classifier = VaswaniForSequenceClassification(config).eval()
    texts = ["the cat sat", "a big red apple tree"]
    with torch.no_grad():
        probs = classifier(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    results = pipeline("text-classification", model=classifier, tokenizer=tokenizer)(texts, top_k=None)
    for result, row in zip(results, probs, strict=True):
        assert [r["label"] for r in result] == [labels[i] for i in row.argsort(descending=True).tolist()]
        assert [r["score"] for r in result] == pytest.approx(row.sort(descending=True).values.tolist(), abs=1e-6)

    tagger = VaswaniForTokenClassification(config).eval()
    encoded = tokenizer("the cat sat", return_tensors="pt", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0]
    with torch.no_grad():
        predicted = tagger(**encoded).logits[0].argmax(-1)
    tags = pipeline("token-classification", model=tagger, tokenizer=tokenizer)("the cat sat")
    real = len(encoded.input_ids[0]) - 1  # every token but the closing </s>
    assert [t["index"] for t in tags] == list(range(real))
    assert [t["entity"] for t in tags] == [labels[i] for i in predicted[:real].tolist()]
    assert [[t["start"], t["end"]] for t in tags] == offsets[:real].tolist()

    encoder = VaswaniEncoderModel(config).eval()
    features = pipeline("feature-extraction", model=encoder, tokenizer=tokenizer)("the cat sat")
    batch = tokenizer("the cat sat", return_tensors="pt")
    with torch.no_grad():
        expected = encoder(**batch).last_hidden_state  # (1, S, d_model)
    assert torch.tensor(features).shape == expected.shape == (1, batch.input_ids.shape[1], config.d_model)
    torch.testing.assert_close(torch.tensor(features), expected)


# ---- 9. bad input -------------------------------------------------------------------------------------------------
@pytest.fixture
def encoder_calls():
    """Counts the calls of a model's first encoder layer: a check that raises before any work leaves it at 0."""
    calls = []

    def watch(model):
        encoder_of(model).encoder.layers[0].register_forward_pre_hook(lambda module, args: calls.append(1))
        return calls

    return watch


@pytest.mark.parametrize(
    "cls, labels, message",
    [
        (VaswaniForSequenceClassification, torch.tensor([0, 3, 1]), r"`labels` contains 3, not a class id of this "
         r"model's 3 classes \(0 to 2\).*`num_labels=`"),
        (VaswaniForSequenceClassification, torch.tensor([0, -1, 1]), r"contains -1, not a class id"),
        (VaswaniForTokenClassification, torch.tensor([[0, 1, 2, -100, 7]] * 3), r"`labels` contains 7, not a class "
         r"id of this model's 3 classes \(0 to 2; -100 where no loss is wanted\).*`num_labels=`"),
        (VaswaniForTokenClassification, torch.tensor([[0, 1, 2, -100, -5]] * 3), r"contains -5"),
        (VaswaniForMaskedLM, torch.tensor([[5, -100, 128, -100, -100]] * 3), r"`labels` contains 128, outside the "
         r"vocabulary \[0, 128\)"),
    ],
    ids=["sequence-too-high", "sequence-negative", "token-too-high", "token-negative", "masked-lm-out-of-vocabulary"],
)  # fmt: skip
def test_labels_out_of_range_are_refused_before_any_work(cls, labels, message, encoder_calls):
    model = build(cls, num_labels=3)
    calls = encoder_calls(model)
    input_ids = torch.randint(4, 128, (3, 5))
    with pytest.raises(ValueError, match=message):
        model(input_ids=input_ids, labels=labels)
    assert calls == []
    good = labels.masked_fill(((labels < 0) & (labels != -100)) | (labels > 2), 0)
    model(input_ids=input_ids, labels=good)  # the same call with good labels runs
    assert calls == [1]


def test_regression_targets_are_not_class_ids():
    """`num_labels=1` is regression (transformers' rule) whatever the labels' dtype: integer scores are not
    refused as class ids, and the loss is the squared error."""
    model = build(VaswaniForSequenceClassification, num_labels=1)
    input_ids, attention_mask = random_batch(batch_size=3, length=7)
    scores = torch.tensor([3, 1, 5])
    out = model(input_ids=input_ids, attention_mask=attention_mask, labels=scores)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), scores.float()))
    assert model.config.problem_type == "regression"


@pytest.mark.parametrize("cls", CLASSES, ids=ids_of)
def test_bad_input_ids_masks_and_keywords(cls, encoder_calls):
    model = build(cls)
    calls = encoder_calls(model)
    with pytest.raises(ValueError, match=r"`input_ids` contains token id 128, outside the vocabulary \[0, 128\)"):
        model(input_ids=torch.tensor([[5, 128]]))
    with pytest.raises(ValueError, match=r"`input_ids` contains token id -1"):
        model(input_ids=torch.tensor([[5, -1]]))
    with pytest.raises(ValueError, match=r"`attention_mask` has shape \(1, 3\) but the token ids have shape \(1, 2\)"):
        model(input_ids=torch.tensor([[5, 6]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(
        TypeError, match=rf"{cls.__name__}.forward\(\) got unexpected keyword arguments `decoder_input_ids`"
    ):
        model(input_ids=torch.tensor([[5, 6]]), decoder_input_ids=torch.tensor([[1, 5]]))
    with pytest.raises(TypeError, match=r"unexpected keyword arguments `atention_mask`"):
        model(input_ids=torch.tensor([[5, 6]]), atention_mask=torch.ones(1, 2))
    assert calls == []
