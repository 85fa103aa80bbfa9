"""The classifier job (scripts/train_classifier.py) on a few hundred verses of the real corpus: the task's labels
and held-out books, the report, the saved folders, and that vaswani and BERT get the same data."""

import functools
import json
import math
from collections import Counter

import pytest
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from vaswani.scripts import data as corpus
from vaswani.scripts import train_classifier as job

TINY_RUN = ["--preset", "tiny", "--max-verses", "600", "--vocab-size", "400", "--pretrain-max-steps", "3",
            "--finetune-max-steps", "3", "--batch-size", "16", "--warmup-steps", "2"]  # fmt: skip
MODELS = ["bert", "vaswani"]
# The parts by their first and last book, written out again here rather than read from the job.
PART_BOOKS = {"law": (1, 5), "history": (6, 17), "poetry": (18, 22), "prophets": (23, 39),
              "gospels and Acts": (40, 44), "letters": (45, 65)}  # fmt: skip


@functools.cache
def sampled_verses() -> list[corpus.Verse]:
    """The verses of TINY_RUN's --max-verses 600: every k-th verse."""
    verses = corpus.load_verses("de")
    return verses[:: math.ceil(len(verses) / 600)]


def part_of(book: int) -> str | None:
    return next((part for part, (first, last) in PART_BOOKS.items() if first <= book <= last), None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of the job by model name, each made once for the whole module: (output dir, results)."""
    folder, done = tmp_path_factory.mktemp("classifier"), {}

    def get(model: str, *extra: str):
        key = (model, *extra)
        if key not in done:
            output_dir = folder / f"run{len(done)}-{model}"
            results = job.run(job.parse_args([*TINY_RUN, "--model", model, "--output-dir", str(output_dir), *extra]))
            done[key] = output_dir, results
        return done[key]

    return get


@pytest.fixture(params=MODELS)
def finished(request, runs):
    return runs(request.param)


def test_labels_of_known_books_and_held_out_books_unseen():
    assert tuple(PART_BOOKS) == job.LABELS
    for book, part in [(1, "law"), (5, "law"), (6, "history"), (17, "history"), (19, "poetry"), (22, "poetry"),
                       (23, "prophets"), (39, "prophets"), (40, "gospels and Acts"), (44, "gospels and Acts"),
                       (45, "letters"), (65, "letters")]:  # fmt: skip
        assert job.LABELS[job.label_of(book)] == part
    assert job.label_of(66) is None  # Revelation: pretraining only
    # Every class has a held-out book; every held-out book is a whole book outside both training sets.
    assert sorted(part_of(book) for book in job.HELD_OUT_BOOKS) == sorted(PART_BOOKS)
    split = job.split_verses(corpus.load_verses("de"))
    held_out_books = {v.book for v in split["held_out"]}
    assert held_out_books == set(job.HELD_OUT_BOOKS)
    assert not held_out_books & {v.book for v in split["pretraining"] + split["training"]}
    assert 66 in {v.book for v in split["pretraining"]} and 66 not in {v.book for v in split["training"]}
    assert len(split["pretraining"]) + len(split["held_out"]) == 31102
    assert all(job.label_of(v.book) is not None for v in split["training"] + split["held_out"])


def test_results_and_majority_baseline(finished):
    output_dir, results = finished
    assert json.loads((output_dir / "results.json").read_text()) == json.loads(json.dumps(results))
    fine, pre = results["finetuning"], results["pretraining"]
    assert pre["steps"] == 3 and fine["steps"] == 3 and pre["tokens"] > 0
    assert math.isfinite(pre["held_out_masked_lm_loss"]) and pre["held_out_masked_tokens"] > 0
    assert 0 <= fine["accuracy"] <= 1 and 0 <= fine["balanced_accuracy"] <= 1
    assert all(0 <= a <= 1 for a in fine["per_class_accuracy"].values())
    # The baseline, recomputed from the corpus: the training books' most frequent part, scored on the held-out books.
    verses = sampled_verses()
    training = Counter(part_of(v.book) for v in verses if v.book not in job.HELD_OUT_BOOKS and v.book != 66)
    held_out = [part_of(v.book) for v in verses if v.book in job.HELD_OUT_BOOKS]
    majority = training.most_common(1)[0][0]
    assert fine["majority_class"] == majority
    assert fine["majority_class_accuracy"] == pytest.approx(held_out.count(majority) / len(held_out), abs=1e-4)
    assert fine["held_out_verses_per_class"] == dict(Counter(held_out))
    assert results["verses"] == {"pretraining": len([v for v in verses if v.book not in job.HELD_OUT_BOOKS]),
                                 "training": sum(training.values()), "held_out": len(held_out)}  # fmt: skip


def test_saved_models_load_and_classify(finished):
    output_dir, results = finished
    assert type(AutoModelForMaskedLM.from_pretrained(output_dir / "mlm")).__name__.endswith("ForMaskedLM")
    model = AutoModelForSequenceClassification.from_pretrained(output_dir / "classifier")
    assert model.config.id2label == dict(enumerate(job.LABELS)) and model.config.num_labels == len(job.LABELS)
    tokenizer = AutoTokenizer.from_pretrained(output_dir / "classifier")
    ids = tokenizer("Und Gott sprach")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id  # <s> verse </s>, as BERT's
    assert tokenizer.mask_token == "<mask>" and tokenizer.mask_token_id == len(tokenizer) - 1
    # The pipeline's answers on the held-out verses give the reported accuracy.
    held_out = [v for v in sampled_verses() if v.book in job.HELD_OUT_BOOKS]
    classify = pipeline("text-classification", model=str(output_dir / "classifier"))
    answers = [answer["label"] for answer in classify([v.text for v in held_out])]
    assert set(answers) <= set(job.LABELS)
    correct = sum(answer == part_of(v.book) for answer, v in zip(answers, held_out, strict=True))
    assert results["finetuning"]["accuracy"] == pytest.approx(correct / len(held_out), abs=1e-4)


def test_both_models_get_the_same_tokenizer_and_examples(runs):
    (bert_dir, bert), (vaswani_dir, vaswani_run) = runs("bert"), runs("vaswani")
    assert (bert_dir / "tokenizer" / "tokenizer.json").read_bytes() == (
        vaswani_dir / "tokenizer" / "tokenizer.json"
    ).read_bytes()  # each trained its own
    assert bert["examples_sha256"] == vaswani_run["examples_sha256"]
    assert bert["pretraining"]["held_out_masked_tokens"] == vaswani_run["pretraining"]["held_out_masked_tokens"]
    assert bert["pretraining"]["tokens"] == vaswani_run["pretraining"]["tokens"]  # the same batches
    assert bert["vocab_size"] == vaswani_run["vocab_size"] == 401  # 400 and <mask>
    assert bert["model_type"] == "bert" and vaswani_run["model_type"] == "vaswani"


def test_main_reuses_a_given_tokenizer_and_prints_the_report(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(job.recipe, "command_line_logging", lambda: None)  # leaves the test session's logging as is
    bert_dir, bert = runs("bert")
    job.main([*TINY_RUN, "--model", "bert", "--tokenizer", str(bert_dir / "tokenizer"), "--output-dir", str(tmp_path),
              "--pretrain-max-steps", "1", "--finetune-max-steps", "1"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "held-out accuracy" in printed and "majority class" in printed and "Leviticus" in printed
    reused = json.loads((tmp_path / "results.json").read_text())
    assert not (tmp_path / "tokenizer").exists()  # the given one is used, not a copy
    assert reused["examples_sha256"] == bert["examples_sha256"] and reused["pretraining"]["steps"] == 1


def test_bad_budget_is_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--pretrain-minutes"):
        job.run(job.parse_args(["--pretrain-minutes", "soon", "--output-dir", str(tmp_path / "out")]))
    assert not (tmp_path / "out").exists()
