import copy
import json
import os
import pydoc_data.topics
import subprocess
import sys
import textwrap
import unicodedata
from functools import cache

import pytest
import torch
from conftest import tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, processors
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, DataCollatorForSeq2Seq

import vaswani
from vaswani import VaswaniTokenizer

UNICODE_CASES = [
    "Der Bär läuft über die Straße, Grüße!",
    "我爱你",
    "emoji 🤗👍🏽 and flags 🇩🇪",
    "mixed Ελληνικά русский עברית العربية हिन्दी 日本語",
    "  whitespace\t\truns \n and newlines\n\n  ",
    "",
    "ﬁ ligature and ² superscript stay as they are",
    "\u200b zero width and \u00a0 no-break space",
    "literal <pad>, <s>, </s> and <unk> in the text are text",
]


@cache
def trained() -> VaswaniTokenizer:
    """A 1,000-token vocabulary trained on the standard library's pydoc topics (465k characters)."""
    return VaswaniTokenizer.train(pydoc_data.topics.topics.values(), vocab_size=1000, show_progress=False)


def fresh() -> VaswaniTokenizer:
    """A copy of `trained()` that a test may change (options, mask token) without changing the others'."""
    return copy.deepcopy(trained())


def round_trip(tokenizer, text: str) -> str:
    return tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True)


def test_training_on_pydoc_topics_gives_a_real_bpe_vocabulary():
    tokenizer = trained()
    assert len(tokenizer) == 1000
    text = "The return statement leaves the current function call"
    ids = tokenizer(text).input_ids
    assert len(ids) < len(text.encode()) / 3  # merged subwords, not bytes
    assert tokenizer.convert_ids_to_tokens(ids[-1]) == "</s>"


@pytest.mark.parametrize("text", UNICODE_CASES)
def test_decode_encode_is_the_identity(text):
    assert round_trip(trained(), text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_property_for_any_unicode(text):
    """Exact for NFC text; other text comes back in its canonically equivalent NFC form (the normalizer's job)."""
    assert round_trip(trained(), text) == unicodedata.normalize("NFC", text)


def test_decomposed_input_is_composed():
    tokenizer = trained()
    assert tokenizer("e\u0301").input_ids == tokenizer("\u00e9").input_ids


def test_special_tokens_match_the_model_config():
    tokenizer, config = trained(), vaswani.VaswaniConfig()
    assert tokenizer.pad_token_id == config.pad_token_id == 0
    assert tokenizer.bos_token_id == config.bos_token_id == config.decoder_start_token_id == 1
    assert tokenizer.eos_token_id == config.eos_token_id == 2
    assert tokenizer.unk_token_id == config.unk_token_id == 3
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]


def test_every_sequence_ends_with_eos_and_targets_become_labels():
    tokenizer = trained()
    batch = tokenizer(["Hello world", ""], text_target=["Hallo Welt", ""], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    lengths = batch["attention_mask"].sum(1)
    for row, n in zip(batch["input_ids"], lengths, strict=True):
        assert row[n - 1] == 2 and (row[n:] == 0).all()
    assert batch["input_ids"][1, 0] == 2  # the empty string encodes to </s> alone
    assert batch["labels"][0, tokenizer("Hallo Welt").input_ids.__len__() - 1] == 2


def test_model_max_length_and_truncation_keep_eos():
    tokenizer = trained()
    assert tokenizer.model_max_length == vaswani.VaswaniConfig().max_position_embeddings
    ids = tokenizer("word " * 50, truncation=True, max_length=8).input_ids
    assert len(ids) == 8 and ids[-1] == 2


def test_generate_takes_the_tokenizer_output_as_is():
    tokenizer = trained()
    model = tiny_model(vocab_size=len(tokenizer))
    out = model.generate(**tokenizer(["a short sentence", "x"], return_tensors="pt", padding=True), max_new_tokens=4)
    assert out.shape[0] == 2


def test_data_collator_and_model_on_a_tokenized_batch():
    tokenizer = trained()
    model = tiny_model(vocab_size=len(tokenizer))
    features = [tokenizer(s, text_target=t) for s, t in [("for loops", "for-Schleifen"), ("if", "wenn")]]
    batch = DataCollatorForSeq2Seq(tokenizer, model=model, return_tensors="pt")(features)
    assert (batch["labels"][1, len(features[1]["labels"]) :] == -100).all()
    assert torch.equal(batch["decoder_input_ids"][:, 0], torch.tensor([1, 1]))
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_save_and_load_give_the_same_ids(tmp_path):
    tokenizer = trained()
    tokenizer.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json", "tokenization_vaswani.py"} <= set(os.listdir(tmp_path))
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, VaswaniTokenizer)
    for text in UNICODE_CASES:
        assert loaded(text).input_ids == tokenizer(text).input_ids


def test_missing_vocabulary_file_is_named(tmp_path):
    trained().save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"Vocabulary file .*tokenizer.json not found"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_corrupt_vocabulary_file_is_named(tmp_path):
    trained().save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": ')
    with pytest.raises(ValueError, match=r"Vocabulary file .*tokenizer.json is corrupt"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_vocab_size_below_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match=r"`vocab_size` must be at least 260"):
        VaswaniTokenizer.train(["abc"], vocab_size=100)


def test_train_tokenizer_script(tmp_path):
    from vaswani.scripts.train_tokenizer import main

    (tmp_path / "a.en").write_text("\n".join(list(pydoc_data.topics.topics.values())[:40]), encoding="utf-8")
    (tmp_path / "a.de").write_text("Die Häuser sind klein.\nGrüße aus Köln.\n" * 50, encoding="utf-8")
    main([str(tmp_path / "a.en"), str(tmp_path / "a.de"), "--vocab-size", "600", "--output-dir", str(tmp_path / "tok")])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert len(tokenizer) == 600 and round_trip(tokenizer, "Grüße aus Köln.") == "Grüße aus Köln."
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing.txt"), "--output-dir", str(tmp_path / "tok2")])


REMOTE_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["vaswani"] = None  # as on a machine without the plugin
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
    assert type(tokenizer).__module__.startswith("transformers_modules."), type(tokenizer).__module__
    print("IDS", tokenizer(sys.argv[2]).input_ids, tokenizer.mask_token_id)
    """
)


def with_mask(tokenizer: VaswaniTokenizer) -> VaswaniTokenizer:
    tokenizer.add_special_tokens({"mask_token": "<mask>"})
    return tokenizer


def prompt_tokenizer(tmp_path) -> VaswaniTokenizer:
    """`trained()` loaded with the causal-LM options: `<s>` in front, no `</s>`."""
    trained().save_pretrained(tmp_path / "default")
    return VaswaniTokenizer.from_pretrained(tmp_path / "default", add_eos_token=False, add_bos_token=True)


@pytest.mark.parametrize("options", ["default", "mask", "mask-bos-no-eos"])
def test_fresh_process_loads_with_trust_remote_code_without_vaswani(tmp_path, options):
    tokenizer = {"default": trained, "mask": lambda: with_mask(fresh())}.get(
        options, lambda: with_mask(prompt_tokenizer(tmp_path))
    )()
    tokenizer.save_pretrained(tmp_path / "tok")
    text = "Grüße 我爱你 🤗 <mask> </s>"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", REMOTE_LOAD, str(tmp_path / "tok"), text], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"IDS {tokenizer(text).input_ids} {tokenizer.mask_token_id}" in result.stdout


# Prompts for a causal language model (add_bos_token / add_eos_token)

SENTENCES = ["The return statement leaves the current function call", "x", ""]


def test_default_options_still_append_eos_only():
    tokenizer = trained()
    assert (tokenizer.add_bos_token, tokenizer.add_eos_token) == (False, True)
    for ids in tokenizer(SENTENCES).input_ids:
        assert ids[-1] == 2 and 2 not in ids[:-1] and 1 not in ids
    pair = tokenizer("for loops", "if").input_ids
    assert pair == tokenizer("for loops").input_ids + tokenizer("if").input_ids


def test_add_eos_token_false_leaves_prompts_open(tmp_path):
    default = trained()
    default.save_pretrained(tmp_path)
    prompts = AutoTokenizer.from_pretrained(tmp_path, add_eos_token=False)
    assert isinstance(prompts, VaswaniTokenizer) and prompts.add_eos_token is False
    expected = [ids[:-1] for ids in default(SENTENCES).input_ids]
    assert prompts(SENTENCES).input_ids == expected
    assert prompts(SENTENCES[0], return_tensors="pt").input_ids.tolist() == [expected[0]]
    batch = prompts(SENTENCES, padding=True, return_tensors="pt")
    assert 2 not in batch.input_ids
    for row, mask, ids in zip(batch.input_ids.tolist(), batch.attention_mask.tolist(), expected, strict=True):
        assert row == ids + [0] * (len(row) - len(ids)) and sum(mask) == len(ids)
    assert prompts("for loops", "if").input_ids == prompts("for loops").input_ids + prompts("if").input_ids


def test_add_bos_token_starts_every_sequence_with_bos(tmp_path):
    default = trained()
    default.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path, add_bos_token=True)
    for ids, before in zip(tokenizer(SENTENCES).input_ids, default(SENTENCES).input_ids, strict=True):
        assert ids == [1] + before
    assert tokenizer("a", "b").input_ids == [1, *default("a").input_ids, 1, *default("b").input_ids]
    both = AutoTokenizer.from_pretrained(tmp_path, add_bos_token=True, add_eos_token=False)
    assert both(SENTENCES[0]).input_ids == [1] + default(SENTENCES[0]).input_ids[:-1]


def test_labels_keep_eos_and_no_bos_whatever_the_options():
    default, tokenizer = trained(), fresh()
    tokenizer.add_eos_token, tokenizer.add_bos_token = False, True
    batch = tokenizer(["for loops", "if"], text_target=["for-Schleifen", "wenn"])
    expected = default(["for loops", "if"], text_target=["for-Schleifen", "wenn"])
    assert batch["labels"] == expected["labels"] and all(ids[-1] == 2 for ids in batch["labels"])
    assert batch["input_ids"] == [[1] + ids[:-1] for ids in expected["input_ids"]]
    assert tokenizer("if").input_ids == [1] + default("if").input_ids[:-1]  # back to the prompt template after


def test_sequence_options_round_trip_through_save_pretrained(tmp_path):
    tokenizer = prompt_tokenizer(tmp_path)
    tokenizer.save_pretrained(tmp_path / "prompts")
    config = json.loads((tmp_path / "prompts" / "tokenizer_config.json").read_text())
    assert (config["add_bos_token"], config["add_eos_token"]) == (True, False)
    loaded = AutoTokenizer.from_pretrained(tmp_path / "prompts")
    assert (loaded.add_bos_token, loaded.add_eos_token) == (True, False)
    assert loaded(SENTENCES).input_ids == tokenizer(SENTENCES).input_ids
    assert loaded(SENTENCES[0]).input_ids == [1] + trained()(SENTENCES[0]).input_ids[:-1]
    overridden = AutoTokenizer.from_pretrained(tmp_path / "prompts", add_eos_token=True, add_bos_token=False)
    assert overridden(SENTENCES).input_ids == trained()(SENTENCES).input_ids


def test_setting_the_options_afterwards_rebuilds_the_template_and_is_saved(tmp_path):
    tokenizer = fresh()
    tokenizer.add_eos_token = False
    assert tokenizer(SENTENCES[0]).input_ids == trained()(SENTENCES[0]).input_ids[:-1]
    tokenizer.add_bos_token = True
    assert tokenizer(SENTENCES[0]).input_ids == [1] + trained()(SENTENCES[0]).input_ids[:-1]
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(SENTENCES).input_ids == tokenizer(SENTENCES).input_ids
    tokenizer.add_eos_token, tokenizer.add_bos_token = True, False
    assert tokenizer(SENTENCES).input_ids == trained()(SENTENCES).input_ids


# tokenizer_config.json exactly as `save_pretrained` wrote it before add_bos_token / add_eos_token existed.
CONFIG_BEFORE_THE_OPTIONS = {
    "auto_map": {"AutoTokenizer": ["tokenization_vaswani.VaswaniTokenizer", None]},
    "backend": "tokenizers",
    "bos_token": "<s>",
    "clean_up_tokenization_spaces": False,
    "eos_token": "</s>",
    "model_max_length": 1024,
    "pad_token": "<pad>",
    "split_special_tokens": True,
    "tokenizer_class": "VaswaniTokenizer",
    "unk_token": "<unk>",
}


def saved_before_the_options(folder) -> Tokenizer:
    """A tokenizer folder as the version before the options wrote it: its backend (with the `</s>` template it
    saved), which the old class called as is with `encode_special_tokens` on, and that config."""
    backend = Tokenizer.from_str(trained().backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="$A:0 </s>:0", pair="$A:0 </s>:0 $B:1 </s>:1", special_tokens=[("</s>", 2)]
    )
    backend.encode_special_tokens = True
    os.makedirs(folder, exist_ok=True)
    backend.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as handle:
        json.dump(CONFIG_BEFORE_THE_OPTIONS, handle)
    return backend


@pytest.mark.parametrize("load", [AutoTokenizer.from_pretrained, VaswaniTokenizer.from_pretrained])
def test_folder_saved_before_the_options_loads_unchanged(tmp_path, load):
    backend = saved_before_the_options(tmp_path)
    tokenizer = load(tmp_path)
    assert isinstance(tokenizer, VaswaniTokenizer)
    assert (tokenizer.add_bos_token, tokenizer.add_eos_token) == (False, True)
    texts = UNICODE_CASES + SENTENCES
    assert tokenizer(texts).input_ids == [encoding.ids for encoding in backend.encode_batch(texts)]
    assert all(ids[-1] == 2 for ids in tokenizer(texts).input_ids)
    assert tokenizer("for loops", "if").input_ids == backend.encode("for loops", "if").ids
    batch = tokenizer(["for loops"], text_target=["for-Schleifen"])
    assert batch["labels"] == [backend.encode("for-Schleifen").ids]
    assert (len(tokenizer), tokenizer.convert_ids_to_tokens([0, 1, 2, 3])) == (1000, ["<pad>", "<s>", "</s>", "<unk>"])


# The mask token (masked-LM pretraining, pipeline("fill-mask"))


def test_mask_token_gets_the_next_id_and_no_other_id_changes():
    tokenizer = fresh()
    size, vocab = len(tokenizer), tokenizer.get_vocab()
    assert tokenizer.add_special_tokens({"mask_token": "<mask>"}) == 1
    assert tokenizer.mask_token == "<mask>" and tokenizer.mask_token_id == size == 1000
    assert len(tokenizer) == size + 1
    assert tokenizer.get_vocab() == {**vocab, "<mask>": size}
    assert tokenizer(UNICODE_CASES).input_ids == trained()(UNICODE_CASES).input_ids  # no "<mask>" in these texts
    assert size in tokenizer.all_special_ids


def test_mask_in_text_is_the_mask_token_and_other_special_tokens_stay_text():
    tokenizer = with_mask(fresh())
    ids = tokenizer("The <mask> statement leaves </s> the <s> function <pad>").input_ids
    assert ids.count(tokenizer.mask_token_id) == 1
    assert ids.count(2) == 1 and ids[-1] == 2 and 1 not in ids and 0 not in ids
    # the mask takes the space before it: the masked word is "Ġreturn", one token with its space
    assert tokenizer("The <mask> statement").input_ids == [
        *tokenizer("The", add_special_tokens=False).input_ids,
        tokenizer.mask_token_id,
        *tokenizer(" statement").input_ids,
    ]
    assert tokenizer.tokenize("a<mask>b") == ["a", "<mask>", "b"]


def test_skip_special_tokens_drops_the_mask():
    tokenizer = with_mask(fresh())
    ids = tokenizer("The <mask> statement").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "The statement"
    assert tokenizer.decode(ids) == "The<mask> statement</s>"
    assert tokenizer.batch_decode([ids, [tokenizer.mask_token_id]], skip_special_tokens=True) == ["The statement", ""]
    assert tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=True) == tokenizer.tokenize("The statement")


def test_mask_token_survives_save_and_load(tmp_path):
    tokenizer = with_mask(fresh())
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["mask_token"] == "<mask>"
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), VaswaniTokenizer.from_pretrained(tmp_path)):
        assert loaded.mask_token_id == tokenizer.mask_token_id == 1000 and len(loaded) == 1001
        text = "The <mask> statement leaves </s> the"
        assert loaded(text).input_ids == tokenizer(text).input_ids
        assert loaded.decode(loaded(text).input_ids, skip_special_tokens=True) == "The statement leaves </s> the"
    AutoTokenizer.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    again = AutoTokenizer.from_pretrained(tmp_path / "again", add_eos_token=False)
    assert again.mask_token_id == 1000 and again("a <mask>").input_ids[-1] == 1000


def test_masked_lm_collator_masks_with_the_mask_id():
    tokenizer = with_mask(fresh())
    texts = [*list(pydoc_data.topics.topics.values())[:3], "for loops"]
    features = [{"input_ids": ids} for ids in tokenizer(texts, truncation=True, max_length=48).input_ids]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.3, seed=0, return_tensors="pt")
    batch = collator(features)
    originals = tokenizer.pad(features, return_tensors="pt").input_ids
    assert batch["input_ids"].shape == originals.shape == (4, 48)
    masked = batch["labels"] != -100
    assert (batch["input_ids"] == tokenizer.mask_token_id).sum() >= 10  # 80% of the 30% of ~150 real tokens
    assert masked[batch["input_ids"] == tokenizer.mask_token_id].all()
    assert torch.equal(batch["labels"][masked], originals[masked])
    assert torch.equal(batch["input_ids"][~masked], originals[~masked])
    assert not masked[(originals == 2) | (originals == 0)].any()  # never </s> or padding


def test_fill_mask_pipeline_finds_the_typed_mask():
    """Any masked LM will do: a tiny random BERT, since the pipeline only needs the tokenizer to give the mask id."""
    from transformers import BertConfig, BertForMaskedLM, pipeline

    tokenizer = with_mask(fresh())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    fill_mask = pipeline("fill-mask", model=BertForMaskedLM(config).eval(), tokenizer=tokenizer)
    results = fill_mask("The <mask> statement leaves </s> the", top_k=3)
    assert len(results) == 3
    for result in results:
        expected = tokenizer("The <mask> statement leaves </s> the").input_ids
        expected[expected.index(tokenizer.mask_token_id)] = result["token"]
        assert result["sequence"] == tokenizer.decode(expected, skip_special_tokens=True)
        assert result["sequence"].endswith(" statement leaves </s> the")
