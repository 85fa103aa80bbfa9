import pytest
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

import vaswani
from vaswani import PRESETS, VaswaniConfig


def test_defaults_are_the_papers_base_model():
    config = AutoConfig.for_model("vaswani")
    assert isinstance(config, VaswaniConfig)
    assert (config.d_model, config.encoder_layers, config.decoder_layers) == (512, 6, 6)
    assert (config.encoder_attention_heads, config.encoder_ffn_dim, config.decoder_ffn_dim) == (8, 2048, 2048)
    assert config.dropout == 0.1 and config.activation_function == "relu"
    assert config.scale_embedding and config.tie_word_embeddings
    assert not config.pre_layer_norm and config.position_embedding_type == "sinusoidal"


def test_standard_aliases():
    config = VaswaniConfig(d_model=64, encoder_attention_heads=4, encoder_layers=3)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (64, 4, 3)
    assert config.get_text_config(decoder=True).num_attention_heads == config.decoder_attention_heads


@pytest.mark.parametrize(
    "name, expected",
    [("base", (512, 8, 2048, 0.1)), ("big", (1024, 16, 4096, 0.3)), ("tiny", (32, 4, 64, 0.1))],
)
def test_table_3_presets(name, expected):
    config = VaswaniConfig.from_preset(name)
    assert (config.d_model, config.encoder_attention_heads, config.encoder_ffn_dim, config.dropout) == expected
    assert name in PRESETS


def test_preset_overrides_win():
    assert VaswaniConfig.from_preset("big", dropout=0.1).dropout == 0.1


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"Unknown preset 'huge'.*base, big"):
        VaswaniConfig.from_preset("huge")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d_model": 500}, r"`d_model` \(500\) must be divisible by `encoder_attention_heads` \(8\)"),
        ({"decoder_attention_heads": 7}, r"divisible by `decoder_attention_heads` \(7\)"),
        ({"encoder_layers": 0}, r"`encoder_layers` must be a positive integer"),
        ({"vocab_size": -5}, r"`vocab_size` must be a positive integer"),
        ({"decoder_ffn_dim": 0}, r"`decoder_ffn_dim` must be a positive integer"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
        ({"attention_dropout": -0.1}, r"`attention_dropout` must be in \[0, 1\)"),
        ({"activation_function": "tanh"}, r"Unknown `activation_function` 'tanh'. Choose one of: relu, gelu, silu"),
        ({"position_embedding_type": "rotary"}, r"Unknown `position_embedding_type` 'rotary'"),
        ({"target_vocab_size": 100}, r"set `share_encoder_decoder_embeddings=False`"),
        (
            {"target_vocab_size": 0, "share_encoder_decoder_embeddings": False},
            r"`target_vocab_size` must be a positive",
        ),
        ({"d_model": "512"}, r"d_model"),
    ],
)
def test_bad_values_fail_at_construction(kwargs, message):
    with pytest.raises(StrictDataclassError, match=message):
        VaswaniConfig(**kwargs)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_deviations_are_accepted(activation):
    config = VaswaniConfig(
        activation_function=activation,
        pre_layer_norm=True,
        position_embedding_type="learned",
        tie_word_embeddings=False,
    )
    assert config.activation_function == activation


def test_config_round_trip(tmp_path):
    config = VaswaniConfig.from_preset("tiny", pre_layer_norm=True)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, vaswani.VaswaniConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.pre_layer_norm and loaded.d_model == 32


def test_separate_target_vocabulary():
    config = VaswaniConfig.from_preset("tiny", share_encoder_decoder_embeddings=False, target_vocab_size=100)
    assert config.decoder_vocabulary == 100 and VaswaniConfig.from_preset("tiny").decoder_vocabulary == 128
    assert config.get_text_config(decoder=True).vocab_size == 128  # not renamed onto the decoder's text config
