"""ONNX Runtime behind `generate()`: the export in optimum's layout, `vaswani.ORTModelForSeq2SeqLM` against eager
PyTorch (greedy, beam, sampling, processors, stopping criteria), its cache, its pipeline and CLIs, int8, a converted
MarianMT model, and bad input. Exports are made once per module (each takes seconds)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import learn_pairs, random_batch, tiny_model
from transformers import (
    AutoModelForSeq2SeqLM,
    LogitsProcessorList,
    MarianConfig,
    MarianMTModel,
    NoBadWordsLogitsProcessor,
    StoppingCriteria,
    StoppingCriteriaList,
)

import vaswani

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from vaswani.modeling.onnx_export import OnnxExportError, export_onnx, past_names  # noqa: E402
from vaswani.modeling.onnxruntime_vaswani import OnnxModelError, ORTModelForSeq2SeqLM  # noqa: E402

PAIRS = [("the house is small", "das Haus ist klein"), ("the book is good", "das Buch ist gut"),
         ("I love you", "ich liebe dich"), ("where is the house", "wo ist das Haus")]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model that has learned the four pairs, saved with its tokenizer (real tokens, real end of sentence)."""
    folder = tmp_path_factory.mktemp("checkpoint")
    learn_pairs(PAIRS, folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    return vaswani.VaswaniTokenizer.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """`from_pretrained(checkpoint, export=True)`, saved: the optimum way."""
    model = ORTModelForSeq2SeqLM.from_pretrained(checkpoint, export=True)
    folder = tmp_path_factory.mktemp("exported") / "onnx"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def random_export(tmp_path_factory):
    """The random tiny model (eager attention for the reference, SDPA in the graphs) and its float32 export."""
    model = tiny_model("sdpa")
    folder = export_onnx(model, tmp_path_factory.mktemp("onnx"))
    return model, ORTModelForSeq2SeqLM.from_pretrained(folder), folder


@pytest.fixture(scope="module")
def int8_export(checkpoint, tmp_path_factory):
    """The trained model through the command: int8, 24 positions."""
    from vaswani.scripts import export_onnx as command

    folder = tmp_path_factory.mktemp("int8") / "onnx"
    command.main([str(checkpoint), str(folder), "--quantize", "int8", "--max-positions", "24"])
    return folder


# ---- the layout -------------------------------------------------------------------------------------------------
def test_the_export_has_optimums_files_and_names(random_export):
    model, ort_model, folder = random_export
    layers = model.config.decoder_layers
    files = {path.name for path in folder.iterdir()}
    assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "config.json",
            "generation_config.json", "ort_config.json"} <= files  # fmt: skip
    encoder = ort_model.encoder.session
    assert (encoder.input_names, encoder.output_names) == (["input_ids", "attention_mask"], ["last_hidden_state"])
    decoder, with_past = ort_model.decoder_session, ort_model.decoder_with_past_session
    assert decoder.input_names == ["input_ids", "encoder_hidden_states", "encoder_attention_mask"]
    assert decoder.output_names == ["logits", *past_names("present", layers)]
    assert "present.0.decoder.key" in decoder.output_names and "present.0.encoder.value" in decoder.output_names
    assert with_past.input_names == ["input_ids", "encoder_attention_mask", *past_names("past_key_values", layers)]
    assert with_past.output_names == ["logits", *past_names("present", layers, ("decoder",))]
    assert json.loads((folder / "ort_config.json").read_text())["max_positions"] == model.config.max_position_embeddings
    # By default no thread spins between runs: generate's own torch operations need the cores then.
    options = decoder.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


# ---- generate() against eager PyTorch -----------------------------------------------------------------------------
DECODINGS = {
    "greedy": dict(num_beams=1),
    "beam-4": dict(num_beams=4),
    "beam-4-two-returned": dict(num_beams=4, num_return_sequences=2, length_penalty=0.6),
    "sampling": dict(do_sample=True, top_k=8, num_return_sequences=2),
}


@pytest.mark.parametrize("decoding", DECODINGS)
def test_generate_gives_pytorchs_tokens_and_scores(random_export, decoding):
    model, ort_model, _ = random_export
    input_ids, attention_mask = random_batch()  # right-padded rows
    options = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10, output_scores=True,
                   return_dict_in_generate=True, **DECODINGS[decoding])  # fmt: skip
    torch.manual_seed(1)
    theirs = model.generate(**options)
    torch.manual_seed(1)
    ours = ort_model.generate(**options)
    assert torch.equal(ours.sequences, theirs.sequences)
    for mine, reference in zip(ours.scores, theirs.scores, strict=True):  # per step, (B * beams, V)
        finite = torch.isfinite(reference)
        assert torch.equal(finite, torch.isfinite(mine))
        torch.testing.assert_close(mine[finite], reference[finite], atol=1e-4, rtol=1e-4)
    if "sequences_scores" in theirs:
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)


class StopAfter(StoppingCriteria):
    def __init__(self, length: int):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool)


def test_logits_processors_and_stopping_criteria_apply_as_in_pytorch(random_export):
    model, ort_model, _ = random_export
    input_ids, attention_mask = random_batch()
    first = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, num_beams=1)
    banned = [[int(token)] for token in first[:, 1:3].flatten().unique()]  # tokens greedy decoding chose
    options = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=20, num_beams=1)
    extra = lambda: dict(logits_processor=LogitsProcessorList([NoBadWordsLogitsProcessor(banned, eos_token_id=2)]),  # noqa: E731
                         stopping_criteria=StoppingCriteriaList([StopAfter(6)]))  # fmt: skip
    theirs, ours = model.generate(**options, **extra()), ort_model.generate(**options, **extra())
    assert torch.equal(ours, theirs)
    assert ours.shape[1] == 6  # the stopping criterion ended it, not max_new_tokens
    assert not any(token in ours[:, 1:] for [token] in banned)


def test_cached_decoding_equals_the_uncached_graph(random_export):
    _, ort_model, _ = random_export
    input_ids, attention_mask = random_batch()
    for num_beams in (1, 3):
        cached = ort_model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10,
                                    num_beams=num_beams, use_cache=True)  # fmt: skip
        uncached = ort_model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10,
                                      num_beams=num_beams, use_cache=False)  # fmt: skip
        assert torch.equal(cached, uncached)


def test_encoder_decoder_keys_and_values_are_computed_once_per_generate(random_export, monkeypatch):
    """decoder_model.onnx (which projects the encoder output into keys and values) runs once; every later step
    runs decoder_with_past_model.onnx, which takes them as past."""
    _, ort_model, _ = random_export
    calls = {"decoder": 0, "decoder_with_past": 0}
    for part in calls:
        session = getattr(ort_model, f"{part}_session")
        run = session.run

        def counted(inputs, part=part, run=run):
            calls[part] += 1
            return run(inputs)

        monkeypatch.setattr(session, "run", counted)
    input_ids, attention_mask = random_batch()
    out = ort_model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=9, min_new_tokens=9,
                             num_beams=4)  # fmt: skip
    assert calls == {"decoder": 1, "decoder_with_past": out.shape[1] - 2}


# ---- loading, saving, pipelines, CLIs ----------------------------------------------------------------------------
def test_export_true_from_a_checkpoint_then_save_and_load(exported, checkpoint, tokenizer):
    _, folder = exported
    saved = {path.name for path in folder.iterdir()}
    assert {"decoder_with_past_model.onnx", "tokenizer.json", "generation_config.json"} <= saved
    reloaded = ORTModelForSeq2SeqLM.from_pretrained(folder)
    pytorch = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    batch = tokenizer([s for s, _ in PAIRS], return_tensors="pt", padding=True)
    reference = pytorch.generate(**batch)  # the checkpoint's generation config: the paper's beam 4
    assert torch.equal(reloaded.generate(**batch), reference)
    texts = tokenizer.batch_decode(reference, skip_special_tokens=True)
    assert [text.strip() for text in texts] == [t for _, t in PAIRS]
    assert reloaded.generation_config.num_beams == pytorch.generation_config.num_beams


def test_pipelines_take_the_onnx_model_and_the_exported_folder(exported, tokenizer):
    model, folder = exported
    expected = [[{"translation_text": t}] for _, t in PAIRS]
    from_object = vaswani.pipeline("translation", model=model, tokenizer=tokenizer)
    assert from_object([s for s, _ in PAIRS]) == expected
    from_folder = vaswani.pipeline("translation", str(folder), num_beams=2)
    assert isinstance(from_folder.model, ORTModelForSeq2SeqLM)
    assert from_folder([s for s, _ in PAIRS]) == expected


def test_translate_command_runs_an_export_and_says_so(int8_export):
    result = subprocess.run([sys.executable, "-m", "vaswani.scripts.translate", str(int8_export), PAIRS[0][0]],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == PAIRS[0][1]
    assert "runtime: ONNX Runtime" in result.stderr and "int8" in result.stderr


def test_int8_export_is_quantized_and_decodes_the_learned_pairs(int8_export, checkpoint, tokenizer):
    import onnx

    graph = onnx.load(int8_export / "decoder_with_past_model.onnx").graph
    assert {node.op_type for node in graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul"}
    assert json.loads((int8_export / "ort_config.json").read_text())["quantization"] == "int8"
    ort_model = ORTModelForSeq2SeqLM.from_pretrained(int8_export)
    batch = tokenizer([s for s, _ in PAIRS], return_tensors="pt", padding=True)
    texts = tokenizer.batch_decode(ort_model.generate(**batch, max_new_tokens=12), skip_special_tokens=True)
    assert [text.strip() for text in texts] == [t for _, t in PAIRS]


def test_a_quantized_copy_of_an_export_says_it_is_int8(random_export, tmp_path):
    import onnx

    from vaswani.modeling.onnx_export import quantized_copy

    _, _, folder = random_export
    copy = quantized_copy(folder, tmp_path / "int8")
    assert json.loads((copy / "ort_config.json").read_text())["quantization"] == "int8"
    assert json.loads((folder / "ort_config.json").read_text())["quantization"] is None  # the float32 one unchanged
    graph = onnx.load(copy / "decoder_with_past_model.onnx").graph
    assert {node.op_type for node in graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul"}


def test_a_converted_marian_model_exports_and_decodes_the_same(tmp_path):
    torch.manual_seed(0)
    marian = MarianMTModel(MarianConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=2,
                                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                                        decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=95,
                                        decoder_start_token_id=95, eos_token_id=0, scale_embedding=True,
                                        activation_function="swish")).eval()  # fmt: skip
    with torch.no_grad():
        marian.final_logits_bias.normal_()
    model = vaswani.VaswaniForConditionalGeneration.from_marian(marian)
    ort_model = ORTModelForSeq2SeqLM.from_folder(export_onnx(model, tmp_path / "onnx"), providers=None)
    input_ids = torch.randint(1, 95, (2, 7))
    attention_mask = torch.ones_like(input_ids)
    for num_beams in (1, 4):
        options = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=8, num_beams=num_beams)
        assert torch.equal(ort_model.generate(**options), marian.generate(**options))


# ---- bad input ----------------------------------------------------------------------------------------------------
def test_a_pytorch_checkpoint_without_graphs_is_refused_with_what_to_do(checkpoint):
    with pytest.raises(OnnxModelError, match=r"no exported vaswani graphs .*pass `export=True`"):
        ORTModelForSeq2SeqLM.from_pretrained(checkpoint)


def test_graphs_of_another_model_are_refused_at_load(random_export, tmp_path):
    _, _, folder = random_export
    shutil.copytree(folder, tmp_path / "onnx")
    config = json.loads((tmp_path / "onnx" / "config.json").read_text())
    config["decoder_layers"] += 1  # the config of a deeper model beside these graphs
    (tmp_path / "onnx" / "config.json").write_text(json.dumps(config))
    with pytest.raises(OnnxModelError, match="graphs come from another model"):
        ORTModelForSeq2SeqLM.from_pretrained(tmp_path / "onnx")


def test_an_output_longer_than_the_export_covers_is_refused_before_any_work(int8_export, tokenizer, monkeypatch):
    ort_model = ORTModelForSeq2SeqLM.from_pretrained(int8_export)  # 24 positions
    monkeypatch.setattr(ort_model.encoder, "forward", lambda *a, **k: pytest.fail("the encoder ran"))
    batch = tokenizer([PAIRS[0][0]], return_tensors="pt")
    with pytest.raises(ValueError, match=r"covers 24 positions.*--max-positions"):
        ort_model.generate(**batch, max_new_tokens=40)
    with pytest.raises(ValueError, match=r"covers 24 positions"):
        ort_model.generate(**batch)  # the default bound, input + 50
    with pytest.raises(ValueError, match=r"dynamic cache: leave `cache_implementation` unset"):
        ort_model.generate(**batch, max_new_tokens=4, cache_implementation="static")
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"`output_attentions=True` is not available"):
        ort_model.generate(**batch, max_new_tokens=4, output_attentions=True, return_dict_in_generate=True)


def test_missing_onnxruntime_says_what_to_install(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'vaswani\[serve\]'"):
        ORTModelForSeq2SeqLM.from_pretrained(checkpoint)


def test_export_options_are_checked(tmp_path):
    model = tiny_model("sdpa")
    with pytest.raises(OnnxExportError, match="Unknown quantization 'int4'"):
        export_onnx(model, tmp_path / "a", quantize="int4")
    learned = tiny_model("sdpa", position_embedding_type="learned", max_position_embeddings=32)
    with pytest.raises(OnnxExportError, match="max_positions=64"):
        export_onnx(learned, tmp_path / "b", max_positions=64)
    with pytest.raises(ValueError, match="export options"):
        ORTModelForSeq2SeqLM.from_pretrained(tmp_path, quantize="int8")
