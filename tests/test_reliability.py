"""What happens when things go wrong: faults during training and saving, bad input, and the exit status of every
console script. docs/reliability.md is the table of these tests (fault or input, what happens, which test);
`test_reliability_table_names_every_test_here` keeps the two in step.

Slow tests (whole training jobs killed and resumed) carry `@pytest.mark.slow`: the README's test command runs them,
the version lanes of CI leave them out (`-m "not slow"`).
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from transformers import AutoModelForSeq2SeqLM

import vaswani

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("The house is small.", "Das Haus ist klein."), ("The world is big.", "Die Welt ist groß."),
         ("I see the house.", "Ich sehe das Haus."), ("The child is small.", "Das Kind ist klein.")]  # fmt: skip
# The main job at the tests' size (as tests/test_translation_job.py): a few hundred pairs, a tiny model, fp32.
TINY_RUN = ["--preset", "tiny", "--max-train-pairs", "300", "--max-eval-pairs", "8", "--vocab-size", "400",
            "--save-steps", "4", "--eval-steps", "6", "--max-tokens", "600", "--warmup-steps", "10",
            "--average-checkpoints", "3", "--average-span", "0.5", "--precision", "fp32", "--sample", ""]  # fmt: skip


def train_checkpoint(folder: Path, **overrides) -> Path:
    """A tiny model that has learned PAIRS, saved with its tokenizer into `folder`."""
    tokenizer = vaswani.VaswaniTokenizer.train([t for pair in PAIRS for t in pair] * 8, vocab_size=300,
                                               show_progress=False)  # fmt: skip
    torch.manual_seed(0)
    config = vaswani.VaswaniConfig.from_preset("tiny", vocab_size=len(tokenizer), dropout=0.0, **overrides)
    model = AutoModelForSeq2SeqLM.from_config(config)
    batch = tokenizer([s for s, _ in PAIRS], text_target=[t for _, t in PAIRS], return_tensors="pt", padding=True)
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("checkpoint") / "model")


# ---- exit status of every console script ------------------------------------------------------------------------
def console_script(name: str):
    """The function behind console script `name`, as pyproject.toml declares it."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name=name)
    return entry.load()


def run_console_script(name: str, argv: list[str], capsys) -> tuple[int, str]:
    """Runs console script `name` in this process exactly as its generated wrapper does (`sys.exit(main())` with
    `sys.argv` set), and returns its exit status and what it wrote to stderr. The status is what `sys.exit` makes of
    the value: None is 0, an int itself, anything else is printed to stderr and is 1."""
    main = console_script(name)
    saved_argv, sys.argv = sys.argv, [name, *argv]
    try:
        try:
            code = main()
        except SystemExit as exit_:
            code = exit_.code
    finally:
        sys.argv = saved_argv
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    return status, capsys.readouterr().err


def scripts_in_pyproject() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def nonempty(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "something").write_text("x")
    return str(folder)


# name: (the arguments of a successful run, those of a failing one, the failure's message). `{model}` is a trained
# tiny checkpoint, `{tmp}` a fresh folder.
EXIT_CASES = {
    "vaswani-translate": (["{model}", "The house is small."], ["{tmp}/missing/model", "x"], "is neither a folder nor a Hub id"),
    "vaswani-train-translation": (
        [*TINY_RUN, "--max-steps", "2", "--average-checkpoints", "1", "--output-dir", "{tmp}/run"],
        ["--time-budget", "1s", "--output-dir", "{tmp}/run"], "is too small to take a single training step"),
    "vaswani-convert-ctranslate2": (["{model}", "{tmp}/ct2"], ["{model}", "{nonempty}"], "is not empty"),
    "vaswani-convert-marian": (["{model}", "{tmp}/marian", "--to-marian"], ["{model}", "{nonempty}"], "is not empty"),
    "vaswani-export-onnx": (["{model}", "{tmp}/onnx"], ["{model}", "{nonempty}"], "is not empty"),
    "vaswani-push-to-hub": (None, ["{model}", "no-namespace"], "repo_id must be 'namespace/name'"),
    "vaswani-refresh-checkpoint": (["{copy}"], ["{tmp}/missing/deeper/path"], "is neither a folder here nor a Hub"),
    "vaswani-plot-attention": (["{model}", "The house is small.", "--output-dir", "{tmp}/attention"],
                               ["{tmp}/missing/model", "The house is small."], "is neither a folder nor a Hub id"),
    "vaswani-compare-marian": (
        [*TINY_RUN, "--max-steps", "2", "--average-checkpoints", "1", "--seeds", "0", "--output-dir", "{tmp}/c"],
        ["--seed", "3"], "--seed is set by the comparison itself"),
    "vaswani-serving-quality": (["{model}", "--max-sentences", "2"], ["{tmp}/missing/model"], "missing/model"),
    "vaswani-train-tokenizer": (["{text}", "--vocab-size", "300", "--output-dir", "{tmp}/tok"],
                                ["{tmp}/missing.txt", "--output-dir", "{tmp}/tok"], "text file"),
    "vaswani-demo": (["--steps", "5", "--output-dir", "{tmp}/demo"], ["--steps", "0"], "--steps"),
}  # fmt: skip


def test_every_console_script_has_its_exit_status_test():
    assert set(EXIT_CASES) == scripts_in_pyproject()


def fill(argv: list[str], checkpoint: Path, tmp_path: Path) -> list[str]:
    text = tmp_path / "text.txt"
    if not text.exists():
        text.write_text("\n".join(t for pair in PAIRS for t in pair) * 4 + "\n", encoding="utf-8")
    copy = tmp_path / "copy"
    if not copy.exists():
        shutil.copytree(checkpoint, copy)
    values = {"model": str(checkpoint), "tmp": str(tmp_path), "text": str(text), "copy": str(copy)}
    return [nonempty(tmp_path / "nonempty") if a == "{nonempty}" else a.format(**values) for a in argv]


@pytest.mark.parametrize("name", [n for n, case in EXIT_CASES.items() if case[0] is not None])
def test_console_script_exits_0_on_success(name, checkpoint, tmp_path, capsys):
    if name in ("vaswani-convert-ctranslate2", "vaswani-serving-quality"):
        pytest.importorskip("ctranslate2")
    if name == "vaswani-export-onnx":
        pytest.importorskip("onnxruntime")
    status, err = run_console_script(name, fill(EXIT_CASES[name][0], checkpoint, tmp_path), capsys)
    assert status == 0, f"{name} succeeded but exited with status {status}; stderr:\n{err[-2000:]}"


@pytest.mark.parametrize("name", list(EXIT_CASES))
def test_console_script_exits_nonzero_with_a_message_on_failure(name, checkpoint, tmp_path, capsys):
    _, argv, message = EXIT_CASES[name]
    status, err = run_console_script(name, fill(argv, checkpoint, tmp_path), capsys)
    assert status != 0, f"{name} failed but exited with status 0"
    assert message in err and "Traceback" not in err, f"{name}: {err[-2000:]}"


def test_convert_ctranslate2_exits_0_as_a_process(checkpoint, tmp_path):
    """The report of 2026-12-05: the conversion succeeded, then exited with status 1 and the output path on stderr
    (`sys.exit(a_path)`). Here as a user runs it, the real console script in its own process."""
    pytest.importorskip("ctranslate2")
    script = Path(sys.executable).with_name("vaswani-convert-ctranslate2")
    result = subprocess.run([str(script), str(checkpoint), str(tmp_path / "ct2")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "greedy outputs equal" in result.stdout + result.stderr
    assert not result.stderr.strip().endswith(str(tmp_path / "ct2"))


def test_push_to_hub_script_exits_0_as_a_process(checkpoint, tmp_path):
    """Against the local Hub server (huggingface_hub reads HF_ENDPOINT when imported, hence a process of its own)."""
    with HubServer(user="me") as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HOME": str(tmp_path / "home"),
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}  # fmt: skip
        env.pop("HF_HUB_OFFLINE", None)
        script = Path(sys.executable).with_name("vaswani-push-to-hub")
        result = subprocess.run([str(script), str(checkpoint), "me/exit-status"], capture_output=True, text=True,
                                env=env)  # fmt: skip
        assert "me/exit-status" in hub.state.repos
    assert result.returncode == 0, result.stderr[-2000:]
