"""After training: the tools users serve and fine-tune with work on vaswani as on transformers' own models, and give
what the model gives. torch.compile (static cache in generate, Trainer's torch_compile), int8 (torch's dynamic
quantization), CTranslate2 (vaswani's converter), ONNX (torch's exporter, run by ONNX Runtime) and PEFT LoRA.

The optional packages (ctranslate2, onnx, onnxscript, onnxruntime, peft) are the `serve` extra; CI installs them."""

import copy

import pytest
import torch
from conftest import learn_pairs, random_batch, tiny_model
from torch import nn
from transformers import (
    AutoModelForSeq2SeqLM,
    CompileConfig,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

import vaswani

PAIRS = [("The house is small.", "Das Haus ist klein."), ("The world is big.", "Die Welt ist groß."),
         ("I see the house.", "Ich sehe das Haus."), ("The child is small.", "Das Kind ist klein.")]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return vaswani.VaswaniTokenizer.train([t for pair in PAIRS for t in pair] * 8, vocab_size=300, show_progress=False)


@pytest.fixture(scope="module")
def trained(tokenizer, tmp_path_factory):
    """A tiny model that has learned the four pairs, saved with its tokenizer: outputs that are real tokens."""
    folder = tmp_path_factory.mktemp("trained")
    model, _ = learn_pairs(PAIRS, folder)  # its tokenizer is the `tokenizer` fixture's, trained alike
    return model, folder


def source_batch(tokenizer):
    return tokenizer([s for s, _ in PAIRS], return_tensors="pt", padding=True)


# ---- torch.compile ----------------------------------------------------------------------------------------------


def compile_on_this_device() -> CompileConfig:
    """transformers compiles generate's decoding steps by itself on GPUs; on a CPU one asks for it."""
    config = CompileConfig(fullgraph=True)  # a graph break is an error, not a silent slow path
    config._compile_all_devices = True
    return config


@pytest.mark.parametrize("num_beams", [1, 4])
def test_a_static_cache_decodes_as_the_dynamic_one(num_beams):
    model = tiny_model("sdpa")
    input_ids, attention_mask = random_batch(3, 9)
    options = dict(num_beams=num_beams, max_new_tokens=10, output_scores=True, return_dict_in_generate=True)
    dynamic = model.generate(input_ids, attention_mask=attention_mask, **options)
    static = model.generate(input_ids, attention_mask=attention_mask, cache_implementation="static", **options)
    assert torch.equal(dynamic.sequences, static.sequences)
    for a, b in zip(dynamic.scores, static.scores, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_compiled_generation_gives_the_eager_tokens():
    assert vaswani.VaswaniForConditionalGeneration._can_compile_fullgraph
    model = tiny_model("sdpa")
    input_ids, attention_mask = random_batch(3, 9)
    eager = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=12)
    for _ in range(2):  # the second call reuses the compiled steps
        compiled = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=12,
                                  cache_implementation="static", compile_config=compile_on_this_device())  # fmt: skip
        assert torch.equal(compiled, eager)
    assert hasattr(model, "_compiled_call")  # transformers did compile the decoding step


def test_a_static_cache_extends_sinusoids_and_refuses_learned_positions_past_their_table():
    model = tiny_model("sdpa", max_position_embeddings=8)
    input_ids, attention_mask = random_batch(2, 6)
    dynamic = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=20)
    static = model.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=20,
                            cache_implementation="static")  # fmt: skip
    assert torch.equal(dynamic, static)  # 21 decoder positions from an 8-row table: extended before decoding
    learned = tiny_model("sdpa", max_position_embeddings=16, position_embedding_type="learned")
    with pytest.raises(ValueError, match="learned positions stop at 15.*max_position_embeddings"):
        learned.generate(input_ids, attention_mask=attention_mask, num_beams=1, max_new_tokens=20,
                         cache_implementation="static")  # fmt: skip


def test_bad_input_is_still_refused_clearly_with_a_static_cache():
    model = tiny_model("sdpa")
    input_ids, attention_mask = random_batch(2, 6)
    input_ids[0, 0] = 999
    with pytest.raises(ValueError, match=r"token id 999, outside the vocabulary \[0, 128\)"):
        model.generate(input_ids, attention_mask=attention_mask, cache_implementation="static", max_new_tokens=3)


def test_trainer_with_torch_compile_gives_the_eager_losses(tokenizer, tmp_path):
    features = [tokenizer(s, text_target=t) for s, t in PAIRS]

    def losses(torch_compile: bool) -> list[float]:
        torch.manual_seed(0)
        # no dropout: inductor draws its random numbers differently from eager torch
        config = vaswani.VaswaniConfig.from_preset("tiny", vocab_size=len(tokenizer), dropout=0.0)
        model = AutoModelForSeq2SeqLM.from_config(config)
        args = Seq2SeqTrainingArguments(tmp_path / str(torch_compile), max_steps=4, per_device_train_batch_size=4,
                                        learning_rate=1e-3, logging_steps=1, report_to=[], torch_compile=torch_compile,
                                        save_strategy="no", seed=0)  # fmt: skip
        trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=features, processing_class=tokenizer,
                                 data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))  # fmt: skip
        trainer.train()
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    eager, compiled = losses(False), losses(True)
    assert len(eager) == 4 and eager[-1] < eager[0]
    assert compiled == pytest.approx(eager, rel=1e-3)


# ---- int8 -------------------------------------------------------------------------------------------------------


def test_dynamic_int8_quantization_quantizes_every_linear_map_and_keeps_the_output(trained, tokenizer):
    model, _ = trained
    linear = sum(type(m) is nn.Linear for m in model.modules())
    # q, k, v, out (twice in a decoder layer) and two feed-forward maps per layer, and the output layer
    assert linear == model.config.encoder_layers * 6 + model.config.decoder_layers * 10 + 1
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    assert sum(type(m) is nn.Linear for m in quantized.modules()) == 0
    assert (
        sum(type(m).__name__ == "Linear" and "quantized" in type(m).__module__ for m in quantized.modules()) == linear
    )
    batch = source_batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(quantized.generate(**batch), model.generate(**batch))


# ---- bf16 weights ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_beams", [1, 4])
def test_bf16_weights_translate_as_float32_through_generate_and_the_pipeline(trained, tokenizer, num_beams):
    model, folder = trained
    batch = source_batch(tokenizer)
    expected = model.generate(**batch, num_beams=num_beams)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    converted = copy.deepcopy(model).to(torch.bfloat16)
    for bf16 in (loaded, converted):
        assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
        with torch.no_grad():
            assert torch.equal(bf16.generate(**batch, num_beams=num_beams), expected)
    translator = vaswani.pipeline("translation", folder, dtype=torch.bfloat16, num_beams=num_beams)
    assert translator.model.dtype == torch.bfloat16
    assert [r[0]["translation_text"] for r in translator([s for s, _ in PAIRS])] == [t for _, t in PAIRS]
    with pytest.raises(ValueError, match=r"applies to a model loaded from a path.*model.to\(torch.bfloat16\)"):
        vaswani.pipeline("translation", model, tokenizer=tokenizer, dtype=torch.bfloat16)


def test_bf16_weights_on_a_cpu_without_bf16_instructions_say_it_is_slower(trained, tokenizer, monkeypatch, caplog):
    from transformers.utils import logging as hf_logging

    from vaswani.modeling import modeling_vaswani

    model, _ = trained
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    batch = source_batch(tokenizer)
    hf_logging.warning_once.cache_clear() if hasattr(hf_logging.warning_once, "cache_clear") else None
    monkeypatch.setattr(modeling_vaswani, "cpu_lacks_bf16", lambda: False)
    with caplog.at_level("WARNING"):
        bf16.generate(**batch, num_beams=1, max_new_tokens=3)
        model.generate(**batch, num_beams=1, max_new_tokens=3)
    assert "no bf16 instructions" not in caplog.text
    monkeypatch.setattr(modeling_vaswani, "cpu_lacks_bf16", lambda: True)
    model.generate(**batch, num_beams=1, max_new_tokens=3)  # float32 weights: nothing to say
    assert "no bf16 instructions" not in caplog.text
    with caplog.at_level("WARNING"):
        bf16.generate(**batch, num_beams=1, max_new_tokens=3)
    assert "no bf16 instructions (AVX-512 BF16 or AMX)" in caplog.text and "model.float()" in caplog.text


# ---- CTranslate2 ------------------------------------------------------------------------------------------------


def test_ctranslate2_scores_and_translates_as_vaswani(trained, tokenizer, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from vaswani.scripts.convert_ctranslate2 import compare

    model, _ = trained
    from vaswani.modeling.ctranslate2_export import convert_to_ctranslate2

    convert_to_ctranslate2(model, tmp_path / "ct2", tokenizer=tokenizer)
    translator = ctranslate2.Translator(str(tmp_path / "ct2"))
    difference, same = compare(model, tokenizer, translator)
    assert difference < 1e-3 and same
    sources = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer([s for s, _ in PAIRS]).input_ids]
    results = translator.translate_batch(sources, beam_size=1)
    assert [tokenizer.convert_tokens_to_string(r.hypotheses[0]) for r in results] == [t for _, t in PAIRS]


def test_ctranslate2_command_converts_checks_and_quantizes(trained, tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    from vaswani.scripts import convert_ctranslate2

    _, folder = trained
    convert_ctranslate2.main([str(folder), str(tmp_path / "fp32")])
    assert "largest log-probability difference" in capsys.readouterr().out
    convert_ctranslate2.main([str(folder), str(tmp_path / "int8"), "--quantization", "int8"])
    assert (tmp_path / "int8" / "model.bin").stat().st_size < (tmp_path / "fp32" / "model.bin").stat().st_size
    with pytest.raises(SystemExit, match="not empty"):
        convert_ctranslate2.main([str(folder), str(tmp_path / "int8")])


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        (dict(share_encoder_decoder_embeddings=False, target_vocab_size=100), "share_encoder_decoder_embeddings"),
        (dict(decoder_attention_heads=2), "decoder_attention_heads"),
    ],
)
def test_ctranslate2_refuses_what_it_cannot_express_by_name(overrides, option, tmp_path):
    pytest.importorskip("ctranslate2")
    from vaswani.modeling.ctranslate2_export import CTranslate2ConversionError, convert_to_ctranslate2

    model = tiny_model(**overrides)
    tokens = [f"t{i}" for i in range(model.config.vocab_size)]
    with pytest.raises(CTranslate2ConversionError, match=option):
        convert_to_ctranslate2(model, tmp_path / "ct2", tokenizer=tokens)
    assert not (tmp_path / "ct2").exists()  # refused before writing anything


def test_ctranslate2_refuses_a_tokenizer_of_another_size(trained, tokenizer, tmp_path):
    pytest.importorskip("ctranslate2")
    from vaswani.modeling.ctranslate2_export import CTranslate2ConversionError, convert_to_ctranslate2

    with pytest.raises(CTranslate2ConversionError, match="tokenizer has 5 tokens but the model's vocabulary has"):
        convert_to_ctranslate2(trained[0], tmp_path / "ct2", tokenizer=["a", "b", "c", "d", "e"])


# ---- ONNX -------------------------------------------------------------------------------------------------------


def test_onnx_export_refuses_an_attention_that_does_not_export(tmp_path):
    pytest.importorskip("onnxscript")
    from vaswani.modeling.onnx_export import OnnxExportError, export_onnx

    model = tiny_model("flex_attention")
    with pytest.raises(OnnxExportError, match="attn_implementation='flex_attention'"):
        export_onnx(model, tmp_path / "onnx")


# ---- PEFT -------------------------------------------------------------------------------------------------------


def test_lora_fine_tunes_saves_reloads_and_merges(trained, tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model, folder = trained
    base = AutoModelForSeq2SeqLM.from_pretrained(folder)
    batch = source_batch(tokenizer)
    base.generate(**batch, max_new_tokens=5)  # the model has run in inference before the adapter
    lora = peft.get_peft_model(base, peft.LoraConfig(task_type="SEQ_2_SEQ_LM", target_modules=["q_proj", "v_proj"],
                                                     r=4, lora_alpha=8, lora_dropout=0.0))  # fmt: skip
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert 0 < trainable < 0.2 * sum(p.numel() for p in lora.parameters())
    new_pairs = [("The child is big.", "Das Kind ist groß.")] * 4
    data = tokenizer([s for s, _ in new_pairs], text_target=[t for _, t in new_pairs], return_tensors="pt")
    optimizer = torch.optim.Adam([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    lora.train()
    first = lora(**data).loss.item()
    for _ in range(30):
        lora(**data).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    lora.eval()
    with torch.no_grad():
        assert lora(**data).loss.item() < 0.5 * first
        tuned = lora(**data).logits
    lora.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = peft.PeftModel.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(folder), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**data).logits, tuned, rtol=1e-5, atol=1e-5)
        merged = reloaded.merge_and_unload()  # writes through weight.data, after the model has run
        torch.testing.assert_close(merged.eval()(**data).logits, tuned, rtol=1e-4, atol=1e-4)
    assert type(merged) is vaswani.VaswaniForConditionalGeneration
    assert tokenizer.decode(merged.generate(**tokenizer(["The child is big."], return_tensors="pt"))[0],
                            skip_special_tokens=True) == "Das Kind ist groß."  # fmt: skip


def test_serving_quality_script_scores_every_path_on_the_test_books(trained):
    pytest.importorskip("ctranslate2")
    pytest.importorskip("sacrebleu")
    from vaswani.scripts import serving_quality

    _, folder = trained
    table = serving_quality.run([str(folder), "--max-sentences", "3"])
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| path", "| ---"))]
    assert [row.split("|")[1].strip() for row in rows] == [
        "PyTorch float32", "PyTorch int8 (quantize_dynamic)", "PyTorch bf16", "ONNX Runtime float32",
        "ONNX Runtime int8", "CTranslate2 float32", "CTranslate2 int8"
    ]  # fmt: skip
    assert "3 test pairs" in table
    # ONNX Runtime float32 gives PyTorch float32's translations: the same BLEU
    bleu = {row.split("|")[1].strip(): row.split("|")[2].strip() for row in rows}
    assert bleu["ONNX Runtime float32"] == bleu["PyTorch float32"]


def test_serving_quality_takes_an_exported_folder_and_names_its_runtime(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("sacrebleu")
    from vaswani.scripts import export_onnx, serving_quality

    _, folder = trained
    export_onnx.main([str(folder), str(tmp_path / "onnx")])
    table = serving_quality.run([str(tmp_path / "onnx"), "--max-sentences", "3", "--onnxruntime-threads", "1"])
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| path", "| ---"))]
    assert len(rows) == 1 and rows[0].startswith("| ONNX Runtime ") and "(float32, CPUExecutionProvider)" in rows[0]
    assert "ONNX Runtime 1 thread;" in table


@pytest.mark.parametrize(
    "overrides",
    [dict(pre_layer_norm=True), dict(position_embedding_type="learned"), dict(activation_function="gelu"),
     dict(activation_function="silu", scale_embedding=False), dict(add_final_logits_bias=True), dict(layer_norm_eps=0.1)],
    ids=["pre-LN", "learned positions", "gelu", "silu unscaled", "final logits bias", "epsilon"],
)  # fmt: skip
def test_ctranslate2_follows_every_named_deviation(overrides, tmp_path):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from vaswani.modeling.ctranslate2_export import convert_to_ctranslate2

    model = tiny_model(**overrides)
    with torch.no_grad():
        for parameter in model.parameters():  # LayerNorm gains and the logits bias away from their initial 1 and 0
            parameter.add_(0.1 * torch.randn_like(parameter))
        if model.final_logits_bias is not None:
            model.final_logits_bias.normal_()
    tokens = ["<pad>", "<s>", "</s>", "<unk>"] + [f"t{i}" for i in range(4, model.config.vocab_size)]
    convert_to_ctranslate2(model, tmp_path / "ct2", tokenizer=tokens)
    translator = ctranslate2.Translator(str(tmp_path / "ct2"))
    source, target = [5, 9, 17, 33, 2], [40, 41, 42, 2]
    theirs = translator.score_batch([[tokens[i] for i in source]], [[tokens[i] for i in target[:-1]]])[0].log_probs
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([source]), labels=torch.tensor([target])).logits
    ours = logits.log_softmax(-1)[0].gather(1, torch.tensor(target)[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(theirs), ours, rtol=0, atol=1e-3)
