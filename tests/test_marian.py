"""MarianMT interop: random-weight MarianMT models in several shapes convert to vaswani with the same logits and the
same generations, and back; converted checkpoints save, load, and work with MarianTokenizer."""

import io
import json

import pytest
import torch
from conftest import tiny_model
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, MarianConfig, MarianMTModel, MarianTokenizer

import vaswani
from vaswani.modeling import sinusoid_table
from vaswani.modeling.marian import MarianConversionError, load_marian, model_dimension_permutation
from vaswani.scripts import convert_marian

PAD = 99
BASE = dict(vocab_size=128, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
            pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=0)  # fmt: skip
SHAPES = {
    "gelu-unscaled": {},  # MarianConfig's own defaults: gelu, scale_embedding=False
    "opus-mt": dict(activation_function="swish", scale_embedding=True),  # what the OPUS-MT checkpoints use
    "relu-deep-wide": dict(
        activation_function="relu",
        scale_embedding=True,
        d_model=48,
        encoder_layers=3,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=6,
        encoder_ffn_dim=40,
        decoder_ffn_dim=72,
    ),  # fmt: skip
    "separate-vocabularies": dict(share_encoder_decoder_embeddings=False, decoder_vocab_size=100, scale_embedding=True),
    "untied-output": dict(tie_word_embeddings=False, activation_function="swish"),
}


def random_marian(seed: int = 0, **overrides) -> MarianMTModel:
    """Random weights everywhere, biases, LayerNorms and final_logits_bias included, so that a wrong name,
    permutation or transpose cannot hide behind an initial value of 0 or 1."""
    torch.manual_seed(seed)
    model = MarianMTModel(MarianConfig(**{**BASE, **overrides})).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "embed_positions" not in name:  # the fixed sinusoid table
                parameter.add_(torch.randn_like(parameter) * 0.1)
        model.final_logits_bias.normal_()
    return model


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, PAD, (3, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 7:], attention_mask[1, 7:] = PAD, 0  # a padded row
    decoder_input_ids = torch.cat([torch.full((3, 1), PAD), torch.randint(1, PAD, (3, 6), generator=generator)], 1)
    return dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("shape", SHAPES)
def test_converted_model_has_marians_logits_and_generations(shape):
    marian = random_marian(**SHAPES[shape])
    model = vaswani.VaswaniForConditionalGeneration.from_marian(marian).eval()
    inputs = batch()
    torch.testing.assert_close(logits(model, inputs), logits(marian, inputs), rtol=0, atol=1e-5)
    source = {k: inputs[k] for k in ("input_ids", "attention_mask")}
    for options in (dict(num_beams=1), dict(num_beams=4, length_penalty=0.6)):
        expected = marian.generate(**source, max_new_tokens=12, **options)
        assert torch.equal(model.generate(**source, max_new_tokens=12, **options), expected), options
    assert model.config.add_final_logits_bias and model.config.share_encoder_decoder_embeddings == (
        "separate" not in shape and "untied" not in shape
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_to_marian_round_trip(shape):
    model = vaswani.VaswaniForConditionalGeneration.from_marian(random_marian(**SHAPES[shape])).eval()
    marian = model.to_marian().eval()
    assert isinstance(marian, MarianMTModel)
    inputs = batch(1)
    torch.testing.assert_close(logits(marian, inputs), logits(model, inputs), rtol=0, atol=1e-5)
    again = vaswani.VaswaniForConditionalGeneration.from_marian(marian)
    original, returned = model.state_dict(), again.state_dict()
    assert original.keys() == returned.keys()
    assert all(torch.equal(original[k], returned[k]) for k in original)  # a permutation and its inverse: exact


def test_paper_model_exports_to_marian():
    """A model trained here (interleaved sinusoids, no final bias) opens the MarianMT tools."""
    model = tiny_model()
    marian = model.to_marian().eval()
    ids = torch.randint(4, 128, (2, 7))
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=ids[:, :4])
    torch.testing.assert_close(logits(marian, inputs), logits(model, inputs), rtol=0, atol=1e-5)


def test_permutation_maps_marians_sinusoid_layout_to_the_papers():
    marian = random_marian()
    table = marian.model.encoder.embed_positions.weight  # MarianMT: [sin ... | cos ...]
    paper = sinusoid_table(table.shape[0], 32)  # Section 3.5: sin, cos, sin, cos, ...
    torch.testing.assert_close(table[:, model_dimension_permutation(32)], paper, rtol=0, atol=1e-6)


def test_converted_checkpoint_saves_and_loads(tmp_path):
    model = vaswani.VaswaniForConditionalGeneration.from_marian(random_marian(**SHAPES["separate-vocabularies"]))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, vaswani.VaswaniForConditionalGeneration)
    assert {"modeling_vaswani.py", "configuration_vaswani.py"} <= {p.name for p in tmp_path.iterdir()}
    inputs = batch()
    assert torch.equal(logits(loaded, inputs), logits(model.eval(), inputs))
    assert torch.equal(loaded.final_logits_bias, model.final_logits_bias)
    assert loaded.generation_config.decoder_start_token_id == PAD


@pytest.fixture
def marian_tokenizer(tmp_path) -> MarianTokenizer:
    """A real sentencepiece model, trained here, in MarianTokenizer's file layout."""
    spm = pytest.importorskip("sentencepiece")
    corpus = ["The house is small.", "Das Haus ist klein.", "The world is big and the house is old.",
              "Die Welt ist gross und das Haus ist alt."] * 30  # fmt: skip
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=60,
                                   hard_vocab_limit=False, minloglevel=2)  # fmt: skip
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    vocab.update({piece: i for i, piece in enumerate((p for p in pieces if p not in vocab and p != "<s>"), start=2)})
    vocab["<pad>"] = len(vocab)
    for name in ("source.spm", "target.spm"):
        (tmp_path / name).write_bytes(model.getvalue())
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    return MarianTokenizer(str(tmp_path / "source.spm"), str(tmp_path / "target.spm"), str(tmp_path / "vocab.json"))


def test_attention_plot_labels_of_a_sentencepiece_tokenizer(marian_tokenizer):
    from vaswani.scripts.plots import token_labels

    ids = marian_tokenizer("The house is small.")["input_ids"]
    labels = token_labels(marian_tokenizer, ids)
    assert labels[-1] == "</s>" and labels[0].startswith("▁"), labels
    assert "".join(labels[:-1]).replace("▁", " ").strip() == "The house is small."


def test_marian_tokenizer_works_unchanged(marian_tokenizer, tmp_path):
    pad = marian_tokenizer.pad_token_id
    marian = random_marian(**{**SHAPES["opus-mt"], "vocab_size": len(marian_tokenizer), "pad_token_id": pad,
                              "decoder_start_token_id": pad, "eos_token_id": marian_tokenizer.eos_token_id})  # fmt: skip
    folder = tmp_path / "converted"
    vaswani.VaswaniForConditionalGeneration.from_marian(marian).save_pretrained(folder)
    marian_tokenizer.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert isinstance(tokenizer, MarianTokenizer)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    inputs = tokenizer(["The house is small.", "Die Welt ist alt."], return_tensors="pt", padding=True)
    expected = tokenizer.batch_decode(marian.generate(**inputs, max_new_tokens=10), skip_special_tokens=True)
    assert tokenizer.batch_decode(model.generate(**inputs, max_new_tokens=10), skip_special_tokens=True) == expected
    translator = vaswani.pipeline("translation", model, tokenizer=tokenizer, max_new_tokens=10)
    assert [r[0]["translation_text"] for r in translator(["The house is small.", "Die Welt ist alt."])] == expected


def test_convert_script_both_ways(tmp_path):
    source = tmp_path / "marian"
    random_marian(**SHAPES["opus-mt"]).save_pretrained(source)
    converted = convert_marian.run([str(source), str(tmp_path / "vaswani")])
    assert isinstance(AutoModelForSeq2SeqLM.from_pretrained(converted), vaswani.VaswaniForConditionalGeneration)
    back = convert_marian.run([str(converted), str(tmp_path / "back"), "--to-marian"])
    inputs = batch()
    torch.testing.assert_close(logits(load_marian(back).eval(), inputs), logits(load_marian(source).eval(), inputs),
                               rtol=0, atol=1e-5)  # fmt: skip
    with pytest.raises(SystemExit, match="not empty"):
        convert_marian.run([str(source), str(tmp_path / "back")])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(activation_function="gelu_new"), "activation_function='gelu_new'"),
        (dict(encoder_layerdrop=0.1), "encoder_layerdrop"),
        (dict(d_model=33, encoder_attention_heads=3, decoder_attention_heads=3), "odd `d_model` \\(33\\)"),
    ],
)
def test_unsupported_marian_features_are_named(overrides, message):
    with pytest.raises(MarianConversionError, match=message):
        vaswani.VaswaniForConditionalGeneration.from_marian(random_marian(**overrides))


def test_trained_position_table_is_refused():
    marian = random_marian()
    with torch.no_grad():
        marian.model.encoder.embed_positions.weight.add_(0.01)
    with pytest.raises(MarianConversionError, match="embed_positions.weight` is not the sinusoid table"):
        vaswani.VaswaniForConditionalGeneration.from_marian(marian)


def test_not_marian_is_refused(tmp_path):
    with pytest.raises(MarianConversionError, match="got a VaswaniForConditionalGeneration"):
        vaswani.VaswaniForConditionalGeneration.from_marian(tiny_model())
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(MarianConversionError, match="'vaswani' checkpoint, not MarianMT"):
        vaswani.VaswaniForConditionalGeneration.from_marian(tmp_path)


@pytest.mark.parametrize(
    "overrides, name",
    [({"pre_layer_norm": True}, "pre_layer_norm"), ({"position_embedding_type": "learned"}, "position")],
)
def test_export_of_features_marian_lacks_is_refused(overrides, name):
    with pytest.raises(MarianConversionError, match=name):
        tiny_model(**overrides).to_marian()
