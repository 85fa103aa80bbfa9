import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, TrainerControl

import vaswani
from vaswani.scripts import data as corpus
from vaswani.scripts import recipe, train_translation

TINY_RUN = ["--preset", "tiny", "--max-train-pairs", "300", "--max-eval-pairs", "8", "--vocab-size", "400",
            "--save-steps", "4", "--eval-steps", "6", "--max-tokens", "600", "--warmup-steps", "10",
            "--average-checkpoints", "3", "--average-span", "0.5",
            # fp32 whatever the machine: --precision auto measures, and at the tiny shape it can come out either way
            "--precision", "fp32",
            "--sample", ""]  # fmt: skip  # no attention pictures: an untrained model's 60-token output takes 7 s to draw


def run_job(output_dir: Path, *extra: str, pictures: bool = False) -> dict:
    """The tiny job; `pictures`: with the attention pictures of the job's default sentence."""
    tiny = TINY_RUN[:-2] if pictures else TINY_RUN  # without "--sample", ""
    return train_translation.run(train_translation.parse_args([*tiny, "--output-dir", str(output_dir), *extra]))


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory):
    """One end-to-end run of the main job on a few hundred pairs of the real corpus, shared by the tests below."""
    output_dir = tmp_path_factory.mktemp("job") / "run"
    results = run_job(output_dir, "--max-steps", "12", pictures=True)
    return output_dir, results


# --- the recipe ------------------------------------------------------------------------------------------------
def test_learning_rate_is_the_papers_formula():
    d_model, warmup = 512, 4000
    for step in (1, 100, 3999, 4000, 4001, 10000, 100000):
        expected = d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert recipe.paper_learning_rate(step, d_model, warmup) == pytest.approx(expected)
    peak = recipe.paper_learning_rate(warmup, d_model, warmup)
    assert peak == max(recipe.paper_learning_rate(s, d_model, warmup) for s in range(1, 20000))
    # An explicit peak keeps the shape.
    assert recipe.paper_learning_rate(8000, d_model, warmup, peak=1e-3) == pytest.approx(1e-3 * 0.5**0.5)


def test_trainer_scheduler_follows_the_formula():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    fake = SimpleNamespace(lr_scheduler=None, optimizer=optimizer, args=SimpleNamespace(learning_rate=2e-3),
                           d_model=256, warmup_steps=10)  # fmt: skip
    scheduler = recipe.TokenBudgetTrainer.create_scheduler(fake, num_training_steps=100)
    for step in range(1, 40):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(recipe.paper_learning_rate(step, 256, 10, 2e-3))
        optimizer.step()
        scheduler.step()


def test_checkpoint_averaging_averages(tmp_path):
    for i, value in enumerate([1.0, 2.0, 6.0]):
        (tmp_path / f"checkpoint-{i}").mkdir()
        save_file({"w": torch.full((2, 3), value), "b": torch.tensor([value, -value])},
                  tmp_path / f"checkpoint-{i}" / "model.safetensors")  # fmt: skip
    averaged = recipe.average_checkpoints(recipe.checkpoints_in(tmp_path))
    assert torch.equal(averaged["w"], torch.full((2, 3), 3.0))
    assert torch.equal(averaged["b"], torch.tensor([3.0, -3.0]))


def test_checkpoints_are_ordered_by_step(tmp_path):
    for step in (100, 20, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert [p.name for p in recipe.checkpoints_in(tmp_path)] == ["checkpoint-3", "checkpoint-20", "checkpoint-100"]


def test_token_batches_respect_the_budget_and_cover_every_example():
    generator = torch.Generator().manual_seed(0)
    source = torch.randint(1, 60, (500,), generator=generator).tolist()
    target = torch.randint(1, 80, (500,), generator=generator).tolist()
    sampler = corpus.TokenBatchSampler(source, target, max_tokens=400, seed=1)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(500))
    for batch in batches:
        assert max(source[i] for i in batch) * len(batch) <= 400  # padded source tokens
        assert max(target[i] for i in batch) * len(batch) <= 400  # padded target tokens
    assert sum(len(b) for b in batches) / len(batches) > 5  # real batching, not one example per batch
    assert batches == list(corpus.TokenBatchSampler(source, target, max_tokens=400, seed=1))  # deterministic
    sampler.set_epoch(1)
    assert list(sampler) != batches  # reshuffled each epoch
    with pytest.raises(corpus.DataError, match="exceeds the batch budget --max-tokens 50"):
        corpus.TokenBatchSampler(source, target, max_tokens=50)


def test_token_batches_leave_cudnn_attention_out_only_with_token_batches(monkeypatch, tmp_path):
    """TokenBudgetTrainer switches cuDNN's attention off (a plan per batch shape on a GPU) when it forms token-count
    batches, and leaves it alone with Trainer's own batches (tests/test_cuda.py checks the effect on a GPU)."""
    from conftest import tiny_model
    from test_training import reverse_task, token_budget_trainer

    calls = []
    monkeypatch.setattr(recipe, "attention_without_per_shape_plans", lambda: calls.append(1) or False)
    data = reverse_task(32, vocab_size=16, seed=0)
    for token_batches, expected in ((False, []), (True, [1])):
        trainer = token_budget_trainer(tiny_model(vocab_size=16, d_model=32), data, tmp_path, token_batches)
        trainer.get_train_dataloader()
        assert calls == expected


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400), ("2", 120)])
def test_parse_duration(text, seconds):
    assert recipe.parse_duration(text) == seconds


def test_time_budget_stops_training():
    budget = recipe.TimeBudget(0.05)
    control = TrainerControl()
    budget.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=551_000), control)
    assert not budget.on_step_end(None, SimpleNamespace(global_step=1, max_steps=551_000), control).should_training_stop
    time.sleep(0.06)
    control = budget.on_step_end(None, SimpleNamespace(global_step=2, max_steps=551_000), control)
    assert control.should_training_stop and control.should_save


def test_a_resumed_time_budget_counts_the_time_already_trained():
    """The seconds trained so far go into each checkpoint's trainer state; a resumed run trains only what is left."""
    budget = recipe.TimeBudget(10.0)
    budget.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=551_000, stateful_callbacks={}), None)
    budget.before = 9.96  # as if 9.96 s had passed
    stored = budget.state()
    assert stored["attributes"]["trained_seconds"] == pytest.approx(9.96, abs=0.01)
    resumed = recipe.TimeBudget(10.0)
    state = SimpleNamespace(global_step=500, max_steps=551_000, stateful_callbacks={"TimeBudget": stored})
    resumed.on_train_begin(None, state, None)
    assert not resumed.on_step_end(None, state, TrainerControl()).should_training_stop
    time.sleep(0.06)
    assert resumed.on_step_end(None, state, TrainerControl()).should_training_stop  # 0.05 s left, not 10 s


def saves(budget: recipe.TimeBudget, steps: range, max_steps: int) -> list[int]:
    """The steps at which `budget` asks Trainer to save, over `steps` of a run of `max_steps`."""
    budget.on_train_begin(None, SimpleNamespace(global_step=steps.start - 1, max_steps=max_steps), None)
    found = []
    for step in steps:
        control = TrainerControl()
        if budget.on_step_end(None, SimpleNamespace(global_step=step, max_steps=max_steps), control).should_save:
            found.append(step)
    return found


def test_averaged_checkpoints_are_placed_over_the_last_part_of_training():
    assert saves(recipe.TimeBudget(3600, average=5, average_span=0.1), range(1, 201), 200) == [180, 185, 190, 195, 200]
    assert saves(recipe.TimeBudget(3600, average=3, average_span=0.5), range(1, 13), 12) == [6, 9, 12]
    # A resumed run (from step 186) saves only the points still ahead, exactly where an uninterrupted run does.
    assert saves(recipe.TimeBudget(3600, average=5, average_span=0.1), range(187, 201), 200) == [190, 195, 200]


def test_progress_bar_counts_against_the_budget_not_epochs(capsys):
    budget = recipe.TimeBudget(3600)
    bar = recipe.BudgetProgress(budget)
    state = SimpleNamespace(global_step=0, max_steps=40, is_world_process_zero=True)  # --max-steps 40 ends it first
    for callback in (budget, bar):
        callback.on_train_begin(None, state, TrainerControl())
    bar.on_log(None, state, TrainerControl(), logs={"loss": 4.25})
    state.global_step = 10
    budget.on_step_end(None, state, TrainerControl())
    bar.on_step_end(None, state, TrainerControl())
    assert bar.training_bar.n == 250  # a quarter of the run, in thousandths
    bar.training_bar.refresh()
    assert "25%" in capsys.readouterr().err and "step 10, loss 4.250" in str(bar.training_bar)


def test_the_default_split_is_by_whole_books():
    data = corpus.load_bible("en", "de")
    assert (len(data.train), len(data.validation), len(data.test)) == (29713, 252, 1137)
    assert data.test[0][0].startswith("It happened in the days when the judges judged")  # Ruth 1:1
    assert not any("`" in source for source, _ in data.train)  # the WEB's backtick apostrophes are mapped


# --- the end-to-end job ----------------------------------------------------------------------------------------
def test_tiny_end_to_end_run(tiny_job):
    output_dir, results = tiny_job
    final = output_dir / "model"
    saved = json.loads((final / "eval_results.json").read_text())
    assert saved["bleu"] == results["bleu"] and 0 <= saved["bleu"] <= 100 and saved["chrf"] > 0
    assert saved["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert saved["steps"] == 12 and saved["test_sentences"] == 8 and len(saved["examples"]) == 5
    assert saved["averaged_checkpoints"] == ["checkpoint-6", "checkpoint-9", "checkpoint-12"]
    # every test translation, one a line in the test pairs' order: the ones the scores were computed from
    predictions = (output_dir / "generated_predictions.txt").read_text(encoding="utf-8").split("\n")
    assert len(predictions) == 9 and predictions[-1] == ""
    assert predictions[:5] == [example["translation"] for example in saved["examples"]]
    assert round(sum(map(recipe.has_repeated_ngram, predictions[:8])) / 8, 4) == saved["looping_share"]
    for picture in ("curves.png", "attention/encoder_attention.png", "attention/decoder_attention.png",
                    "attention/cross_attention.png"):  # fmt: skip
        assert (final / picture).stat().st_size > 5000
    assert any((output_dir / "tensorboard").iterdir())


def test_each_run_logs_tensorboard_into_its_own_folder(tmp_path, monkeypatch):
    """The second job of one process (vaswani-compare-marian's, the test suite's) logged into the first one's folder
    while the job set TENSORBOARD_LOGGING_DIR with setdefault and left it set; a value the user set still wins."""
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    for name in ("first", "second"):
        with train_translation.tensorboard_logging_dir(tmp_path / name):
            assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / name)
        assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "mine"))
    with train_translation.tensorboard_logging_dir(tmp_path / "third"):
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "mine")
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "mine")


def test_predictions_keep_one_line_per_test_pair(tmp_path):
    path = tmp_path / "generated_predictions.txt"
    train_translation.write_predictions(path, ["Das Haus ist klein.", "", "Zwei\nZeilen", "Ende."])
    assert path.read_text(encoding="utf-8").split("\n") == ["Das Haus ist klein.", "", "Zwei Zeilen", "Ende.", ""]


@pytest.mark.parametrize("model_type", ["vaswani", "marian"])
def test_layers_sets_the_depth_of_both_stacks(tiny_job, model_type):
    output_dir, _ = tiny_job
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "model")
    args = train_translation.parse_args([*TINY_RUN, "--model-type", model_type, "--layers", "3"])
    train_translation.check_args(args)
    model = train_translation.build_model(args, tokenizer)
    encoder, decoder = model.get_encoder(), model.get_decoder()
    assert len(encoder.layers) == len(decoder.layers) == 3  # the tiny preset has 2
    assert model.config.encoder_layers == model.config.decoder_layers == 3


def test_the_default_model_is_small_with_two_layers_and_a_named_preset_keeps_its_own():
    default = train_translation.parse_args([])
    train_translation.check_args(default)
    assert (default.preset, default.layers) == ("small", 2)
    named = train_translation.parse_args(["--preset", "small"])
    train_translation.check_args(named)
    assert (named.preset, named.layers) == ("small", None)  # the preset's 3+3


def test_the_saved_model_is_the_checkpoint_average(tiny_job):
    output_dir, _ = tiny_job
    averaged = recipe.average_checkpoints(recipe.checkpoints_in(output_dir)[-3:])
    final = load_file(output_dir / "model" / "model.safetensors")
    assert torch.allclose(final["model.shared.weight"], averaged["model.shared.weight"])
    last = load_file(output_dir / "last" / "model.safetensors")
    assert not torch.equal(final["model.shared.weight"], last["model.shared.weight"])


def test_checkpoint_reloads_and_translates(tiny_job, capsys):
    output_dir, results = tiny_job
    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "model")
    assert isinstance(model, vaswani.VaswaniForConditionalGeneration)
    assert isinstance(tokenizer, vaswani.VaswaniTokenizer)
    assert model.generation_config.max_length is None  # the paper's input + 50 rule, not a silent 20-token cap
    # The paper's decoding, stored by the job in every checkpoint it saves (a model built from a config is greedy).
    for folder in [output_dir / "model", *output_dir.glob("checkpoint-*")]:
        saved = json.loads((folder / "generation_config.json").read_text())
        assert (saved["num_beams"], saved["length_penalty"]) == (4, 0.6), folder
    first = results["examples"][0]
    assert recipe.translate(model, tokenizer, [first["source"]], progress=False) == [first["translation"]]
    from vaswani.scripts import translate

    translate.main([str(output_dir / "model"), first["source"], "The house is small."])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == first["translation"]


def test_translate_keeps_the_lines_of_its_input(tiny_job, capsys, monkeypatch):
    output_dir, results = tiny_job
    from vaswani.scripts import translate

    first = results["examples"][0]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{first['source']}\n\n   \n{first['source']}\n"))
    translate.main([str(output_dir / "model")])
    assert capsys.readouterr().out.split("\n") == [first["translation"], "", "", first["translation"], ""]


@pytest.mark.parametrize("where", ["runs/en-de/no-such/model", "./missing", "{tmp}/file.txt"])
def test_translate_names_a_path_that_is_neither_a_folder_nor_a_hub_id(where, tmp_path, capsys):
    from vaswani.scripts import translate

    (tmp_path / "file.txt").write_text("x")
    where = where.format(tmp=tmp_path)
    with pytest.raises(SystemExit):
        translate.main([where, "The house is small."])
    error = capsys.readouterr().err
    assert where in error and ("neither a folder nor a Hub id" in error or "is a file" in error), error


@pytest.mark.parametrize("script", ["translate", "plots"])
def test_the_jobs_output_folder_points_to_the_model_inside_it(script, tiny_job, capsys):
    """`vaswani-translate runs/en-de` (the job's --output-dir, not its model) names runs/en-de/model, not a
    ValueError from inside transformers."""
    from vaswani.scripts import plots, translate

    output_dir, _ = tiny_job
    with pytest.raises(SystemExit):
        {"translate": translate, "plots": plots}[script].main([str(output_dir), "The house is small."])
    error = capsys.readouterr().err
    assert f"{output_dir} is a folder without config.json" in error, error
    assert f"Did you mean {output_dir / 'model'}?" in error, error


def test_a_folder_of_saved_models_is_named_in_the_error(tmp_path):
    for inner in ("a", "b"):
        (tmp_path / "runs" / inner).mkdir(parents=True)
        (tmp_path / "runs" / inner / "config.json").write_text("{}")
    expected = r"runs is a folder without config.json, not a saved model. The saved models in it: .*runs/a, .*runs/b\.$"
    with pytest.raises(ValueError, match=expected):
        recipe.check_model_location(str(tmp_path / "runs"))


def test_attention_plot_script_names_a_path_that_is_neither_a_folder_nor_a_hub_id(tmp_path, capsys):
    from vaswani.scripts import plots

    with pytest.raises(SystemExit):
        plots.main(["./missing/model", "The house is small.", "--output-dir", str(tmp_path)])
    assert "./missing/model is neither a folder nor a Hub id" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_trained_model_beam_search_is_the_same_with_and_without_the_cache(tiny_job):
    """On real text: the test books' first sentences, decoded with the paper's beam search by the trained model."""
    output_dir, _ = tiny_job
    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "model")
    sources = [source for source, _ in corpus.load_bible("en", "de").test[:6]]
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    cached = model.generate(**batch, num_beams=4, length_penalty=0.6, use_cache=True, max_new_tokens=30)
    uncached = model.generate(**batch, num_beams=4, length_penalty=0.6, use_cache=False, max_new_tokens=30)
    assert torch.equal(cached, uncached)
    assert (cached != model.config.pad_token_id).sum(1).min() > 3  # real outputs, not an immediate end


def test_the_job_stops_before_training_when_cached_decoding_is_wrong(tmp_path, monkeypatch):
    """The 5.24 failure (the cache passed under a name the model did not read) must end the job, not exit 0."""
    from test_versions import drop_the_cache

    build = train_translation.build_model

    def broken(args, tokenizer):
        model = build(args, tokenizer)
        drop_the_cache(model)
        return model

    monkeypatch.setattr(train_translation, "build_model", broken)
    with pytest.raises(SystemExit, match=r"before training: Decoding with the cache gives other results") as error:
        run_job(tmp_path / "run", "--max-steps", "2")
    assert f"transformers {transformers.__version__}" in str(error.value)
    assert not list((tmp_path / "run").glob("checkpoint-*"))  # stopped before any training


def test_attention_plot_labels_are_text_not_byte_level_characters():
    """Byte-level BPE stores "König" as "ĠKÃ¶nig"; the pictures' axes show "▁König"."""
    from vaswani.scripts.plots import token_labels

    sentences = ["Der König ist alt.", "Der Vorsänger singt.", "Die Straße ist groß."] * 20
    tokenizer = vaswani.VaswaniTokenizer.train(sentences, vocab_size=300)
    ids = tokenizer("Der König ist alt.")["input_ids"]
    labels = token_labels(tokenizer, ids)
    assert labels[-1] == "</s>" and not any("Ã" in label or "Ġ" in label for label in labels), labels
    assert "".join(labels[:-1]).replace("▁", " ") == "Der König ist alt."
    assert "▁König" in labels


def test_the_pictures_default_sentence_is_from_the_test_set(tiny_job):
    """Genesis 1:1, the default before, was a training sentence."""
    _, results = tiny_job
    data = train_translation.load_corpus(train_translation.parse_args(TINY_RUN))
    assert results["attention_sample"] == train_translation.sample_sentence(data)
    assert results["attention_sample"] in [source for source, _ in data.test]
    assert results["attention_sample"] not in {source for source, _ in data.train}


def test_attention_rows_are_labelled_with_the_token_they_predict(tiny_job):
    """Row i of the decoder's attention takes token i as input and predicts token i + 1: labelled with its input,
    the alignment read shifted by one ("Gott" lit up "the")."""
    from vaswani.scripts import plots

    output_dir, _ = tiny_job
    model, tokenizer = recipe.load_model_and_tokenizer(str(output_dir / "model"))
    out, labels, generated = plots.attention_maps(model, tokenizer, "The house is small.", max_new_tokens=8)
    rows, columns = labels["cross_attentions"]
    assert rows == plots.token_labels(tokenizer, generated[0, 1:]) == labels["decoder_attentions"][0]
    assert labels["decoder_attentions"][1] == plots.token_labels(tokenizer, generated[0, :-1])  # what it was fed
    assert columns == plots.token_labels(tokenizer, tokenizer("The house is small.")["input_ids"])
    assert out.cross_attentions[0].shape[-2:] == (len(rows), len(columns))


def test_curves_say_both_losses_are_label_smoothed(tmp_path, monkeypatch):
    from vaswani.scripts import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    history = [{"step": 25, "loss": 6.0, "learning_rate": 1e-4}, {"step": 50, "eval_loss": 5.5}]
    plots.plot_curves(history, tmp_path / "curves.png", label_smoothing=0.1)
    legend = [text.get_text() for text in figures[0].axes[0].get_legend().get_texts()]
    assert legend == ["training loss (label smoothing 0.1)", "validation loss (label smoothing 0.1)"]


def test_attention_plot_script(tiny_job, tmp_path):
    from vaswani.scripts import plots

    output_dir, _ = tiny_job
    plots.main([str(output_dir / "model"), "The house is small.", "--output-dir", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cross_attention.png", "decoder_attention.png", "encoder_attention.png"
    ]  # fmt: skip


def test_resume_ends_where_an_uninterrupted_run_ends(tiny_job, tmp_path, monkeypatch):
    output_dir, _ = tiny_job  # 12 uninterrupted steps, fp32
    interrupted = tmp_path / "run"
    # --precision auto on a CPU with AVX-512 BF16 measures bf16 against fp32; near the threshold the resumed run's
    # measurement can differ from the interrupted run's (CI, 2026-12-03): here fp32 first, then bf16.
    speedups = iter([1.0, 9.0])
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(recipe, "bf16_matmul_speedup", lambda *shape: next(speedups))
    run_job(interrupted, "--max-steps", "8", "--precision", "auto")
    assert json.loads((interrupted / train_translation.PRECISION_RECORD).read_text())["bf16"] is False
    run_job(interrupted, "--max-steps", "12", "--resume", "--precision", "auto")
    assert next(speedups) == 9.0  # measured once: the resumed run kept the interrupted run's fp32
    resumed = load_file(interrupted / "last" / "model.safetensors")
    uninterrupted = load_file(output_dir / "last" / "model.safetensors")
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name  # bit-identical: same data, same dropout masks


def test_bf16_autocast_run(tmp_path):
    results = run_job(tmp_path / "run", "--max-steps", "2", "--bf16", "--average-checkpoints", "1")
    assert results["steps"] == 2 and results["chrf"] >= 0 and results["recipe"]["bf16"] is True
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert not (tmp_path / "run" / "model" / "attention").exists()  # --sample '' (TINY_RUN): no pictures
    assert (tmp_path / "run" / "model" / "curves.png").is_file()


@pytest.mark.parametrize(("cuda", "cuda_bf16", "amx", "avx512_bf16", "matmul_speedup", "expected"), [
    (False, False, False, False, None, False),  # AVX2: no bf16 instructions
    (False, False, False, True, 0.58, False),  # AVX-512 BF16, measured slower (the Xeon of docs/training.md)
    (False, False, False, True, 2.5, True),  # AVX-512 BF16, measured faster (the AMD EPYC, Zen 4)
    (False, False, True, True, None, True),  # AMX
    (True, True, False, False, None, True),  # a CUDA GPU with bf16
    (True, False, True, True, None, False),  # a CUDA GPU without bf16 decides, whatever the CPU
])  # fmt: skip
def test_precision_auto_chooses_bf16_only_where_it_trains_faster(monkeypatch, cuda, cuda_bf16, amx, avx512_bf16,
                                                                 matmul_speedup, expected):  # fmt: skip
    measured = []

    def speedup(rows, inner, columns):
        measured.append((rows, inner, columns))
        return matmul_speedup

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(recipe, "bf16_matmul_speedup", speedup)
    args = train_translation.parse_args([])
    assert args.precision == "auto" and train_translation.use_bf16(args, d_model=256) is expected
    # measured only where nothing else decides, at the job's shape: max-tokens x d_model by d_model x d_ff
    assert measured == ([(1000, 256, 1024)] if matmul_speedup else [])
    for forced, bf16 in (("bf16", True), ("fp32", False)):
        assert train_translation.use_bf16(train_translation.parse_args(["--precision", forced])) is bf16
    assert measured == ([(1000, 256, 1024)] if matmul_speedup else [])  # a forced precision measures nothing


def test_resume_keeps_the_recorded_precision_and_warns_when_told_otherwise(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(recipe, "bf16_matmul_speedup", lambda *shape: pytest.fail("measured on --resume"))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    train_translation.record_bf16(tmp_path, SimpleNamespace(bf16=True, precision="auto"))
    resume = ["--output-dir", str(tmp_path), "--resume"]
    assert train_translation.use_bf16(train_translation.parse_args(resume)) is True
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert train_translation.use_bf16(train_translation.parse_args([*resume, "--precision", "fp32"])) is False
    assert "the interrupted run trained in bf16" in caplog.text  # the explicit flag wins, and says what it costs


def test_bf16_matmul_speedup_is_measured():
    speedup = recipe.bf16_matmul_speedup(64, 32, 128)
    assert math.isfinite(speedup) and speedup > 0


def test_compare_marian_alternates_two_seeds_each_and_writes_the_median_table(tmp_path, capsys, monkeypatch):
    from vaswani.scripts import compare_marian

    readme = tmp_path / "README.md"
    readme.write_text(f"# Results\n{compare_marian.START}\nold rows\n{compare_marian.END}\nafter\n")
    # --precision auto on a CPU with AVX-512 BF16 whose measurements would come out either way: measured once
    measurements = iter([2.5, 1.0, 1.0, 1.0, 1.0])
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(recipe, "bf16_matmul_speedup", lambda *shape: next(measurements))
    compare_marian.main([*TINY_RUN, "--max-steps", "4", "--output-dir", str(tmp_path / "c"), "--update-readme",
                         str(readme), "--precision", "auto"])  # fmt: skip
    assert next(measurements) == 1.0  # one measurement for the four runs
    out = capsys.readouterr().out
    comparison = json.loads((tmp_path / "c" / "comparison.json").read_text())
    runs, medians = comparison["runs"], comparison["medians"]
    assert [r["recipe"]["seed"] for r in runs["vaswani"]] == [0, 1] == [r["recipe"]["seed"] for r in runs["marian"]]
    assert runs["vaswani"][0]["model_type"] == "vaswani" and runs["marian"][0]["model_type"] == "marian"
    assert runs["vaswani"][0]["parameters"] == runs["marian"][0]["parameters"]  # identical architecture
    assert [r["recipe"]["bf16"] for model in compare_marian.MODELS for r in runs[model]] == [True] * 4
    assert "; bf16 autocast; " in comparison["caption"]
    assert medians["vaswani"]["bleu"] == (runs["vaswani"][0]["bleu"] + runs["vaswani"][1]["bleu"]) / 2
    # every run read the one tokenizer the first run trained
    vocabulary = AutoTokenizer.from_pretrained(tmp_path / "c" / "tokenizer").get_vocab()
    for name in ("vaswani-seed0", "marian-seed0", "vaswani-seed1", "marian-seed1"):
        assert AutoTokenizer.from_pretrained(tmp_path / "c" / name / "model").get_vocab() == vocabulary
    written = readme.read_text()
    assert "old rows" not in written and written.endswith(f"{compare_marian.END}\nafter\n")
    assert "| **vaswani, median** |" in written and "| marian | 1 |" in written and "| **vaswani, median** |" in out
    assert compare_marian.verdict(medians) in written and compare_marian.verdict(medians) in out  # under the table


def test_compare_marian_verdict_judges_each_part_of_the_target_on_the_medians():
    from vaswani.scripts import compare_marian

    marian = {"steps": 1000, "bleu": 18.0, "looping_share": 0.03, "length_ratio": 0.9}
    good = {"steps": 1200, "bleu": 19.5, "looping_share": 0.015, "length_ratio": 1.05}  # each on its bound
    lines = compare_marian.verdict({"vaswani": good, "marian": marian}).splitlines()
    assert lines[0] == "Quality target, on vaswani's medians: **PASS**"
    assert lines[2:] == [
        "- steps: 1.20x Marian's (target >= 1.2x): PASS",
        "- test BLEU: +1.50 against Marian (target >= +1.5): PASS",
        "- looping: 1.5% of outputs (target <= 1.5%): PASS",
        "- length ratio: 1.050 (target 0.95-1.05): PASS",
    ]
    for key, worse in [("steps", 1199), ("bleu", 19.49), ("looping_share", 0.0151), ("length_ratio", 0.949)]:
        lines = compare_marian.verdict({"vaswani": {**good, key: worse}, "marian": marian}).splitlines()
        assert lines[0].endswith("**FAIL**") and [line.endswith(": FAIL") for line in lines[2:]].count(True) == 1


def test_compare_marian_refuses_a_readme_without_markers_before_any_run(tmp_path):
    from vaswani.scripts import compare_marian

    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit):
        compare_marian.main(["--update-readme", str(tmp_path / "README.md"), "--output-dir", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_two_process_accelerate_run(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (torchrun starts 2 processes; Trainer picks gloo
    because no GPU is present): both processes train, the main one evaluates."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # This interpreter's accelerate (the venv's), not whatever `accelerate` is first on PATH.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vaswani.scripts.train_translation",
               *TINY_RUN, "--max-steps", "4", "--output-dir", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((tmp_path / "run" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert "BLEU" in result.stdout and (tmp_path / "run" / "model" / "eval_results.json").is_file()
    assert result.stderr.count("Processes: 2 (distributed)") == 2 and result.stdout.count("Plan:") == 2


def test_fine_tuning_a_saved_model_on_a_tsv(tiny_job, tmp_path):
    """--model-name-or-path: the job starts from a checkpoint with its own tokenizer instead of from scratch."""
    start = tiny_job[0] / "model"
    pairs = [("The house is small.", "Das Haus ist klein."), ("The world is big.", "Die Welt ist groß.")] * 20
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    output_dir = tmp_path / "tuned"
    results = train_translation.run(train_translation.parse_args([
        "--model-name-or-path", str(start), "--train-file", str(data), "--validation-file", str(data),
        "--test-file", str(data), "--max-steps", "10", "--warmup-steps", "2", "--peak-learning-rate", "3e-3",
        "--max-tokens", "200", "--average-checkpoints", "1", "--output-dir", str(output_dir)]))  # fmt: skip
    assert results["fine_tuned_from"] == str(start) and results["steps"] == 10
    assert not (output_dir / "tokenizer").exists()  # no new vocabulary was trained
    before = AutoModelForSeq2SeqLM.from_pretrained(start)
    after = AutoModelForSeq2SeqLM.from_pretrained(output_dir / "model")
    assert (
        AutoTokenizer.from_pretrained(output_dir / "model").get_vocab()
        == AutoTokenizer.from_pretrained(start).get_vocab()
    )
    tokenizer = AutoTokenizer.from_pretrained(start)
    batch = tokenizer(
        [s for s, _ in pairs[:2]], text_target=[t for _, t in pairs[:2]], return_tensors="pt", padding=True
    )
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    with torch.no_grad():
        loss_before, loss_after = before.eval()(**batch).loss, after.eval()(**batch).loss
    assert loss_after < 0.9 * loss_before, (loss_before, loss_after)  # 5.69 -> 4.75 when written


# --- bad input: a clear message before any work ----------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d: ["--source", "klingon"], r"Unknown language 'klingon'. Use one of en \(4\), en-kjv \(k\), de \(e\)"),
        (lambda d: ["--time-budget", "1s"], r"--time-budget 1s is too small to take a single training step"),
        (lambda d: ["--time-budget", "soon"], r"Cannot read the duration 'soon'"),
        (lambda d: ["--resume"], r"--resume: no checkpoint-\* folder"),
        (lambda d: ["--train-file", str(d / "nope.tsv"), "--validation-file", str(d / "nope.tsv"), "--test-file",
                    str(d / "nope.tsv")], r"Data file .*nope.tsv not found"),
        (lambda d: ["--train-file", str(write(d / "bad.tsv", "a\tb\nc\td\te\n")), "--validation-file",
                    str(d / "bad.tsv"), "--test-file", str(d / "bad.tsv")], r"bad.tsv:2: expected 2 tab-separated"),
        (lambda d: ["--train-file", str(write(d / "bad.jsonl", '{"source": "a"}\n')), "--validation-file",
                    str(d / "bad.jsonl"), "--test-file", str(d / "bad.jsonl")], r'bad.jsonl:1: expected \{"source"'),
        (lambda d: ["--train-file", str(write(d / "a.en", "x\ny\n")), str(write(d / "a.de", "x\n")),
                    "--validation-file", str(d / "a.en"), str(d / "a.de"), "--test-file", str(d / "a.en"),
                    str(d / "a.de")], r"a.en has 2 lines but .*a.de has 1"),
        (lambda d: ["--train-file", str(write(d / "ok.tsv", "a\tb\n"))], r"give --train-file, --validation-file"),
        (lambda d: ["--model-name-or-path", str(d), "--preset", "base"],
         r"--preset: the checkpoint given by --model-name-or-path decides"),
        (lambda d: ["--model-name-or-path", str(d), "--layers", "2"],
         r"--layers: the checkpoint given by --model-name-or-path decides"),
        (lambda d: ["--layers", "0"], r"--layers 0: give at least 1"),
        (lambda d: ["--label-smoothing", "1.5"], r"--label-smoothing: `label_smoothing` is 1.5: give the share"),
        (lambda d: ["--model-name-or-path", str(d / "a" / "b" / "model")], r"neither a folder nor a Hub id"),
    ],
)  # fmt: skip
def test_bad_input_fails_before_any_work(tmp_path, make_args, message):
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit, match=message):
        train_translation.main([*make_args(tmp_path), "--output-dir", str(output_dir)])
    assert not (output_dir / "tokenizer").exists()


def test_command_line_entry_point_reports_bad_input(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vaswani.scripts.train_translation", "--target", "xx"],
                            capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0 and "Unknown language 'xx'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_jobs_log_is_one_bar_per_phase_and_a_line_per_validation(tmp_path):
    """What a user reads: no Trainer log dicts, no evaluation bars, no bar per weights file written or loaded; one
    bar per phase and one line per validation. (It was 166 KB for the main job, 243 dicts and 34 shard bars.)"""
    command = [sys.executable, "-m", "vaswani.scripts.train_translation", *TINY_RUN, "--max-steps", "4",
               "--eval-steps", "2", "--save-steps", "2", "--average-checkpoints", "1", "--max-eval-pairs", "2",
               "--output-dir", str(tmp_path / "run")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    for noise in ("{'loss'", "{'eval_loss'", "{'train_runtime'", "Writing model shards", "Loading weights"):
        assert noise not in log
    bars = set(re.findall(r"(?:^|\r)([^\r\n%]*?): +\d+%\|", log, flags=re.M))
    assert bars == {"training", "translating the validation set", "translating the test set"}
    assert not re.search(r"(?:^|\r) *\d+%\|", log, flags=re.M)  # Trainer's evaluation bar has no name
    assert re.findall(r"step (\d+): validation loss \d+\.\d{3}, \d+:\d\d elapsed, \d+:\d\d left", log) == ["2", "4"]
    assert re.search(r"Done in \d+:\d\d: training \d+:\d\d", result.stdout)
    assert re.search(r"looping \d+\.\d%\n", result.stdout) and "4-gram" not in log  # one name, defined in the docs


def test_the_looping_figure_has_one_name_in_the_docs_and_the_tables():
    """One name, looping (eval_results.json: looping_share), defined once per doc with its "3 or more times"."""
    from vaswani.scripts import compare_marian

    run = {"bleu": 1.0, "chrf": 2.0, "validation_bleu": 0.5, "steps": 10, "steps_per_second": 1.0,
           "length_ratio": 1.0, "looping_share": 0.01, "recipe": {"seed": 0}}  # fmt: skip
    runs = {"vaswani": [run], "marian": [run]}
    header = compare_marian.table(runs, compare_marian.summary(runs), "").splitlines()[2]
    assert header.endswith("| length ratio | looping |")
    for doc in ("README.md", "docs/training.md"):
        text = (Path(__file__).resolve().parents[1] / doc).read_text(encoding="utf-8")
        assert text.count("3 or more times") == 1 and "4-gram 3 times" not in text, doc
