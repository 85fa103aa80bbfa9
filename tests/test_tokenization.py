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
from transformers import AutoTokenizer, DataCollatorForSeq2Seq

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
    print("IDS", tokenizer("Grüße 我爱你 🤗").input_ids)
    """
)


def test_fresh_process_loads_with_trust_remote_code_without_vaswani(tmp_path):
    tokenizer = trained()
    tokenizer.save_pretrained(tmp_path / "tok")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", REMOTE_LOAD, str(tmp_path / "tok")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"IDS {tokenizer('Grüße 我爱你 🤗').input_ids}" in result.stdout
