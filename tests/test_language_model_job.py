import json
import math
from itertools import islice
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

import vaswani
from vaswani.scripts import train_language_model as job

TINY_RUN = ["--preset", "tiny", "--max-train-verses", "300", "--vocab-size", "400", "--max-steps", "4",
            "--batch-size", "8", "--warmup-steps", "2", "--samples", "1"]  # fmt: skip
HAS_CAUSAL_LM = hasattr(vaswani, "VaswaniForCausalLM")
needs_vaswani = pytest.mark.skipif(not HAS_CAUSAL_LM, reason="VaswaniForCausalLM has not landed yet")
MODELS = ["gpt2", pytest.param("vaswani", marks=needs_vaswani)]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """`jobs(model)`: (output folder, results) of the tiny run of `model`, each run once for the whole module."""
    done = {}

    def run(model: str):
        if model not in done:
            output_dir = tmp_path_factory.mktemp(f"lm-{model}")
            done[model] = output_dir, job.run(job.parse_args([*TINY_RUN, "--model", model,
                                                              "--output-dir", str(output_dir)]))  # fmt: skip
        return done[model]

    return run


@pytest.fixture(params=MODELS)
def model_name(request):
    return request.param


def test_run_reports_a_finite_perplexity(jobs, model_name):
    output_dir, results = jobs(model_name)
    assert json.loads((output_dir / "results.json").read_text(encoding="utf-8")) == results
    assert results["model"] == model_name and results["steps"] == 4 and results["parameters"] > 0
    assert math.isfinite(results["validation_perplexity"]) and results["validation_perplexity"] > 1
    assert math.isfinite(results["final_training_loss"])
    assert results["training_tokens"] > 0 and results["tokens_per_second"] > 0
    assert results["validation_verses"] == 252  # every verse of the validation books
    assert len(results["samples"]) == 1
    for sample in results["samples"]:
        assert sample["sampled"].startswith(sample["prompt"]) and sample["greedy"].startswith(sample["prompt"])


def test_saved_folder_loads_and_generates(jobs, model_name):
    output_dir, results = jobs(model_name)
    model = AutoModelForCausalLM.from_pretrained(output_dir)
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    assert type(model).__name__ == results["model_class"] and model.dtype == torch.float32
    # The saved weights are the evaluated ones.
    validation = job.encode(tokenizer, job.split_verses(job.corpus.load_verses("de"))[1], 256)
    reloaded = job.perplexity(model, validation, tokenizer.pad_token_id)["perplexity"]
    assert reloaded == pytest.approx(results["validation_perplexity"], rel=1e-4)
    prompt = torch.tensor([job.prompt_ids(tokenizer, "Und Gott sprach")])
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=5, min_new_tokens=5)
    assert generated.shape == (1, prompt.shape[1] + 5) and torch.equal(generated[:, : prompt.shape[1]], prompt)
    generator = pipeline("text-generation", model=str(output_dir))
    assert generator.tokenizer("Und Gott sprach").input_ids == prompt[0].tolist()  # the job's prompts: no </s>
    text = generator("Und Gott sprach", max_new_tokens=3, min_new_tokens=3, do_sample=False)[0]["generated_text"]
    assert text.startswith("Und Gott sprach") and len(text) > len("Und Gott sprach")


@pytest.mark.parametrize("name", MODELS)
def test_perplexity_is_exp_of_the_models_own_mean_loss(jobs, name):
    tokenizer = AutoTokenizer.from_pretrained(jobs("gpt2")[0])
    config = job.model_config(job.parse_args(TINY_RUN), tokenizer)
    model = job.build_model(name, config, seed=0).eval()
    examples = job.encode(tokenizer, ["Im Anfang schuf Gott die Himmel und die Erde.", "Und es ward Licht.",
                                      "Und Gott sah das Licht, daß es gut war."], 256)  # fmt: skip
    batch = tokenizer.pad({"input_ids": examples}, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss  # the mean over the predicted tokens of the whole batch
    for batch_size in (1, 2, 3):  # summed over batches, not a mean of batch means
        scores = job.perplexity(model, examples, tokenizer.pad_token_id, batch_size=batch_size)
        assert scores["tokens"] == sum(len(ids) - 1 for ids in examples)
        assert scores["perplexity"] == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_examples_and_prompts_have_the_special_tokens_of_their_use(jobs):
    output_dir, results = jobs("gpt2")
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    words = tokenizer("Und Gott sprach", add_special_tokens=False).input_ids
    assert job.encode(tokenizer, ["Und Gott sprach"], 256) == [[bos, *words, eos]]
    assert job.prompt_ids(tokenizer, "Und Gott sprach") == [bos, *words]  # no eos: the verse goes on
    validation = job.split_verses(job.corpus.load_verses("de"))[1]
    assert [sample["prompt"] for sample in results["samples"]] == job.prompts(validation, 1)
    prompts = job.prompts(validation, 3)
    assert len(set(prompts)) == 3
    for prompt in prompts:
        assert len(prompt.split()) == job.PROMPT_WORDS and job.prompt_ids(tokenizer, prompt)[-1] != eos


def test_held_out_books_stay_out_of_training():
    verses = [job.corpus.Verse(f"verse of book {book}", book) for book in range(1, 67)]
    train, validation = job.split_verses(verses)
    assert validation == [f"verse of book {book}" for book in job.corpus.VALIDATION_BOOKS]
    held_out = set(job.corpus.VALIDATION_BOOKS) | set(job.corpus.TEST_BOOKS)
    assert train == [f"verse of book {book}" for book in range(1, 67) if book not in held_out]


def test_each_model_has_its_own_default_folder():
    assert job.parse_args(["--model", "gpt2"]).output_dir == Path("runs/lm-gpt2")
    assert job.parse_args([]).output_dir == Path("runs/lm-vaswani")


def test_gpt2_has_the_size_of_the_preset():
    config = vaswani.VaswaniConfig.from_preset("small", vocab_size=8000)
    gpt2 = job.gpt2_config_like(config)
    assert (gpt2.n_embd, gpt2.n_layer, gpt2.n_head, gpt2.n_inner, gpt2.vocab_size) == (256, 3, 4, 1024, 8000)
    assert gpt2.resid_pdrop == gpt2.embd_pdrop == config.dropout
    assert (gpt2.bos_token_id, gpt2.eos_token_id, gpt2.pad_token_id) == (1, 2, 0)


@needs_vaswani
def test_both_models_get_identical_tokenizers_and_examples(jobs):
    (gpt2_dir, gpt2), (vaswani_dir, vaswani_results) = jobs("gpt2"), jobs("vaswani")
    assert (gpt2_dir / "tokenizer.json").read_bytes() == (vaswani_dir / "tokenizer.json").read_bytes()
    for key in ("tokenizer_sha256", "training_examples_sha256", "training_verses", "validation_tokens", "recipe"):
        assert gpt2[key] == vaswani_results[key], key
    assert gpt2["size"] == vaswani_results["size"]


@needs_vaswani
def test_both_models_get_the_same_batches_in_the_same_order(jobs):
    output_dir = jobs("gpt2")[0]
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    args = job.parse_args([*TINY_RUN, "--output-dir", str(output_dir / "unused")])
    config = job.model_config(args, tokenizer)
    examples = job.encode(tokenizer, job.split_verses(job.corpus.load_verses("de"), 300)[0], 256)
    batches = {}
    for name in ("gpt2", "vaswani"):  # building the model draws different random numbers: the order must not care
        trainer = job.build_trainer(args, job.build_model(name, config, args.seed), tokenizer, examples)
        batches[name] = [batch["input_ids"].tolist() for batch in islice(trainer.get_train_dataloader(), 3)]
    assert batches["gpt2"] == batches["vaswani"]
