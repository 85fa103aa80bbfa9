"""transformers' own model tests, run against vaswani: the conventions its tools assume of every model.

`ModelTesterMixin` (tests/test_modeling_common.py) and `ConfigTester` (tests/test_configuration_common.py) come from
the source distribution of exactly the installed transformers, fetched from the package registry at install time by
scripts/fetch_transformers_tests.py (scripts/setup_env.sh and every CI lane run it) into .ci/transformers-tests/,
never committed. The model tester is ours, written after transformers' Marian tester
(tests/models/marian/test_modeling_marian.py). Every test of theirs that is skipped here says why below; the
generation and export mixins are not in the sdist, and vaswani's own tests cover what they found
(tests/test_generation.py, tests/test_versions.py, tests/test_modeling.py).

Without the fetched files (no registry at install time) the whole module is skipped, with that reason.
"""

import sys
import unittest
from importlib import metadata
from pathlib import Path

import pytest
import torch

import vaswani
from vaswani.modeling.modeling_vaswani import VaswaniDecoder, VaswaniEncoder

VERSION = metadata.version("transformers")
SUITE = Path(__file__).resolve().parent.parent / ".ci" / "transformers-tests" / VERSION
if not (SUITE / "transformers_tests" / "test_modeling_common.py").exists():
    pytest.skip(f"transformers {VERSION}'s own model tests are not fetched (.ci/transformers-tests/{VERSION}): run "
                "`.venv/bin/python scripts/fetch_transformers_tests.py`, which needs the package registry.",
                allow_module_level=True)  # fmt: skip
pytest.importorskip("parameterized", reason="transformers' model tests need `parameterized` (the dev extra)")
sys.path.insert(0, str(SUITE))

from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, ids_tensor  # noqa: E402


class VaswaniModelTester:
    """Marian's tester (the same sizes and inputs) for vaswani's config: a tiny post-LN Transformer."""

    def __init__(self, parent, batch_size=13, seq_length=7, is_training=True, vocab_size=99, hidden_size=16,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=4, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=100,
                 eos_token_id=2, pad_token_id=1, bos_token_id=0, decoder_start_token_id=3):  # fmt: skip
        self.parent = parent
        self.batch_size, self.seq_length, self.is_training = batch_size, seq_length, is_training
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attention_heads, self.intermediate_size, self.hidden_act = num_attention_heads, intermediate_size, hidden_act
        self.hidden_dropout_prob, self.attention_probs_dropout_prob = hidden_dropout_prob, attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.eos_token_id, self.pad_token_id, self.bos_token_id = eos_token_id, pad_token_id, bos_token_id
        self.decoder_start_token_id = decoder_start_token_id
        # Read by the mixin's shape checks (Marian's tester gets them the same way, from these sizes).
        self.encoder_seq_length = self.decoder_seq_length = self.key_length = seq_length

    def get_config(self) -> vaswani.VaswaniConfig:
        return vaswani.VaswaniConfig(
            vocab_size=self.vocab_size, d_model=self.hidden_size, encoder_layers=self.num_hidden_layers,
            decoder_layers=self.num_hidden_layers, encoder_attention_heads=self.num_attention_heads,
            decoder_attention_heads=self.num_attention_heads, encoder_ffn_dim=self.intermediate_size,
            decoder_ffn_dim=self.intermediate_size, activation_function=self.hidden_act,
            dropout=self.hidden_dropout_prob, attention_dropout=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings, eos_token_id=self.eos_token_id,
            bos_token_id=self.bos_token_id, pad_token_id=self.pad_token_id,
            decoder_start_token_id=self.decoder_start_token_id,
        )  # fmt: skip

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size).clamp(3)
        input_ids[:, -1] = self.eos_token_id
        decoder_input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        config = self.get_config()
        attention_mask = input_ids.ne(config.pad_token_id)
        inputs = {"input_ids": input_ids, "decoder_input_ids": decoder_input_ids, "attention_mask": attention_mask,
                  "decoder_attention_mask": attention_mask}  # fmt: skip  (as Marian's: the source mask, all ones)
        return config, inputs

    def prepare_config_and_inputs_for_common(self):
        return self.prepare_config_and_inputs()


# transformers' tests that cannot run here, each with the reason; every other test of the mixin must pass.
NOT_RUN = {
    "test_generation_tester_mixin_inheritance": "GenerationTesterMixin is not in the sdist (tests/generation/); "
    "vaswani's tests/test_generation.py checks what its failures showed (greedy from a config, continuing from a "
    "cache, a static cache compiled once)",
}


@pytest.fixture(scope="module", autouse=True)
def listed_as_transformers_lists_its_models():
    """The mixin finds which heads train, and on which labels, by class name in transformers' tables of its own
    models (`MODEL_MAPPING_NAMES`, ...): vaswani is listed there as Marian is, for this module only (the Auto
    classes find registered models before these tables, so nothing else changes meanwhile)."""
    from transformers.models.auto import modeling_auto

    # The base models of all three shapes (transformers' table lists several where a model type has several).
    tables = [(modeling_auto.MODEL_MAPPING_NAMES, ("VaswaniModel", "VaswaniEncoderModel", "VaswaniDecoderModel")),
              (modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, "VaswaniForConditionalGeneration"),
              (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "VaswaniForCausalLM"),
              (modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, "VaswaniForMaskedLM"),
              (modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES, "VaswaniForSequenceClassification"),
              (modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES, "VaswaniForTokenClassification")]  # fmt: skip
    for table, name in tables:
        table["vaswani"] = name
    yield
    for table, _ in tables:
        del table["vaswani"]


class VaswaniModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (vaswani.VaswaniModel, vaswani.VaswaniForConditionalGeneration)
    is_encoder_decoder = True
    test_missing_keys = False  # as Marian's: the tied embeddings are not saved twice

    def setUp(self):
        self.model_tester = VaswaniModelTester(self)
        self.config_tester = ConfigTester(self, config_class=vaswani.VaswaniConfig, d_model=16)

    def test_config(self):
        tester = self.config_tester
        for check in ("create_and_test_config_common_properties", "create_and_test_config_to_json_string",
                      "create_and_test_config_to_json_file", "create_and_test_config_from_and_save_pretrained",
                      "create_and_test_config_from_and_save_pretrained_subfolder",
                      "create_and_test_config_with_num_labels", "check_config_can_be_init_without_params"):  # fmt: skip
            with self.subTest(check):
                getattr(tester, check)()
        # Not run: check_config_arguments_init, whose keyword table (tests/utils/) is not in the sdist.

    def test_encoder_and_decoder_alone_give_what_the_model_gives(self):
        """Marian's test_encoder_decoder_model_standalone: the stacks saved and loaded on their own."""
        import tempfile

        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = vaswani.VaswaniModel(config).eval()
        outputs = model(**inputs)
        with tempfile.TemporaryDirectory() as folder:
            model.get_encoder().save_pretrained(folder)
            encoder = VaswaniEncoder.from_pretrained(folder).eval()
        encoded = encoder(inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
        torch.testing.assert_close(encoded, outputs.encoder_last_hidden_state)
        with tempfile.TemporaryDirectory() as folder:
            model.get_decoder().save_pretrained(folder)
            decoder = VaswaniDecoder.from_pretrained(folder).eval()
        decoded = decoder(input_ids=inputs["decoder_input_ids"], attention_mask=inputs["decoder_attention_mask"],
                          encoder_hidden_states=encoded, encoder_attention_mask=inputs["attention_mask"])[0]  # fmt: skip
        torch.testing.assert_close(decoded, outputs.last_hidden_state)


class VaswaniOneStackTester(VaswaniModelTester):
    """The same sizes and inputs for the models of one stack: the encoder alone (BERT's shape) or the decoder alone
    (GPT's shape), as transformers' Bert and BART standalone-decoder testers give them: ids and their mask."""

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.num_labels = self.type_sequence_label_size = 3  # read by the mixin's classification labels

    def prepare_config_and_inputs(self):
        config, inputs = super().prepare_config_and_inputs()
        config.num_labels = self.num_labels
        config.is_encoder_decoder = False  # what each of these models makes of the config (the mixin reads it)
        return config, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}


# ... and for the encoder-only models only:
NOT_RUN_ENCODER_ONLY = {
    "test_load_with_mismatched_shapes": "it loads a classification checkpoint with `AutoModel` and the tester's "
    "config, which names no `architectures`: vaswani's AutoModel picks the base of a checkpoint's shape from them "
    "(docs/shapes.md), so here it builds the encoder-decoder `VaswaniModel` and calls it without decoder inputs. "
    "The classification half of the test is test_can_load_ignoring_mismatched_shapes, which runs; "
    "test_encoder_only.py checks AutoModel of saved encoder-only checkpoints",
}


class VaswaniEncoderOnlyModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (vaswani.VaswaniEncoderModel, vaswani.VaswaniForMaskedLM,
                         vaswani.VaswaniForSequenceClassification, vaswani.VaswaniForTokenClassification)  # fmt: skip
    test_missing_keys = False  # the tied embeddings are not saved twice

    def setUp(self):
        self.model_tester = VaswaniOneStackTester(self)


class VaswaniDecoderOnlyModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (vaswani.VaswaniDecoderModel, vaswani.VaswaniForCausalLM)
    test_missing_keys = False  # the tied embeddings are not saved twice

    def setUp(self):
        self.model_tester = VaswaniOneStackTester(self)


for _test_class, _not_run in ((VaswaniModelTest, NOT_RUN), (VaswaniDecoderOnlyModelTest, NOT_RUN),
                              (VaswaniEncoderOnlyModelTest, {**NOT_RUN, **NOT_RUN_ENCODER_ONLY})):  # fmt: skip
    for _name, _reason in _not_run.items():
        assert callable(getattr(_test_class, _name)), _name  # a test of the mixin, not a switch
        setattr(_test_class, _name, unittest.skip(_reason)(lambda self: None))
