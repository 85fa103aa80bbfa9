"""What happens when things go wrong: faults during training and saving, bad input, and the exit status of every
console script. docs/reliability.md is the table of these tests (fault or input, what happens, which test);
`test_reliability_table_names_every_test_here` keeps the two in step.

Slow tests (whole training jobs killed and resumed) carry `@pytest.mark.slow`: the README's test command runs them,
the version lanes of CI leave them out (`-m "not slow"`).
"""

import importlib.metadata
import json
import os
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import learn_pairs
from hub_server import HubServer
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

import vaswani
from vaswani.scripts import recipe

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("The house is small.", "Das Haus ist klein."), ("The world is big.", "Die Welt ist groß."),
         ("I see the house.", "Ich sehe das Haus."), ("The child is small.", "Das Kind ist klein.")]  # fmt: skip
# The main job at the tests' size (as tests/test_translation_job.py): a few hundred pairs, a tiny model, fp32.
TINY_RUN = ["--preset", "tiny", "--max-train-pairs", "300", "--max-eval-pairs", "8", "--vocab-size", "400",
            "--save-steps", "4", "--eval-steps", "6", "--max-tokens", "600", "--warmup-steps", "10",
            "--average-checkpoints", "3", "--average-span", "0.5", "--precision", "fp32", "--sample", ""]  # fmt: skip


def train_checkpoint(folder: Path, **overrides) -> Path:
    """A tiny model that has learned PAIRS, saved with its tokenizer into `folder`."""
    learn_pairs(PAIRS, folder, **overrides)
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


# ---- saving: a full disk, a read-only folder ----------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs mounted at a fresh folder (the tests run as root here and in CI; skipped where mount is not
    allowed). Yields its path; unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def weights_of(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_loads_with(folder: Path, weights: dict[str, torch.Tensor]):
    loaded = AutoModelForSeq2SeqLM.from_pretrained(folder)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, weights[name]), f"{name} changed"


def test_saving_onto_a_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(small_disk):
    old = vaswani.VaswaniForConditionalGeneration(vaswani.VaswaniConfig.from_preset("tiny", vocab_size=1000))
    folder = small_disk / "model"
    old.save_pretrained(folder)  # about 1.1 MB of weights
    # Fill the disk so that a second copy of the weights cannot be written.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "filler").write_bytes(b"\0" * (free - 300_000))
    torch.manual_seed(1)
    new = vaswani.VaswaniForConditionalGeneration(vaswani.VaswaniConfig.from_preset("tiny", vocab_size=1000))
    with pytest.raises(OSError, match=r"Could not save into .*model: .*No space left on device.*Nothing in .* was "
                                      r"changed"):  # fmt: skip
        new.save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == [], "staging folder left behind"
    assert_loads_with(folder, weights_of(old))


def test_saving_into_a_read_only_folder_fails_clearly_and_keeps_the_previous_checkpoint(small_disk):
    old = vaswani.VaswaniForConditionalGeneration(vaswani.VaswaniConfig.from_preset("tiny", vocab_size=200))
    old.save_pretrained(small_disk)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    new = vaswani.VaswaniForConditionalGeneration(vaswani.VaswaniConfig.from_preset("tiny", vocab_size=200))
    with pytest.raises(OSError, match=r"Could not save into .*: .*Read-only file system.*Nothing was written"):
        new.save_pretrained(small_disk)
    assert_loads_with(small_disk, weights_of(old))


# ---- the training job: killed, interrupted, two at once --------------------------------------------------------
# The job in a process of its own that SIGKILLs itself at one moment, named by KILL_AT as "moment:detail":
#   step:N          during step N, after its forward pass and loss, before the backward pass and the update;
#   seconds:S       during the first step after S seconds of training that follows a complete checkpoint;
#   evaluate:N      during the validation loss at step N;
#   save:FILE       in a checkpoint's save, instead of writing FILE (the weights written, the optimizer not yet);
#   average:N       while averaging, at the N-th checkpoint read;
#   final-save:N    in the final model's save, at its N-th rename out of the staging folder (some files moved).
KILLED_JOB = """
import os, pathlib, signal, sys, torch
from vaswani.scripts import recipe, train_translation
moment, _, detail = os.environ.get("KILL_AT", "").partition(":")
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def wrap(owner, name, before):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        before(*args, **kwargs)
        return original(*args, **kwargs)
    setattr(owner, name, wrapped)
if moment == "save":
    wrap(torch, "save", lambda obj, f, *a, **k: str(f).endswith(detail) and die())
if moment in ("step", "evaluate"):
    compute_loss = recipe.TokenBudgetTrainer.compute_loss
    def compute_loss_or_die(self, model, *args, **kwargs):
        result = compute_loss(self, model, *args, **kwargs)
        step = self.state.global_step + (1 if model.training else 0)  # during step N, N - 1 steps are done
        if step == int(detail) and model.training == (moment == "step"):
            die()
        return result
    recipe.TokenBudgetTrainer.compute_loss = compute_loss_or_die
if moment == "seconds":
    import time
    compute_loss, started = recipe.TokenBudgetTrainer.compute_loss, []
    def compute_loss_or_die_later(self, model, *args, **kwargs):
        started.append(started[0] if started else time.monotonic())
        saved = recipe.last_complete_checkpoint(pathlib.Path(self.args.output_dir))
        if model.training and saved and time.monotonic() - started[0] >= float(detail):
            die()
        return compute_loss(self, model, *args, **kwargs)
    recipe.TokenBudgetTrainer.compute_loss = compute_loss_or_die_later
calls = []
def count(n):
    calls.append(1)
    if len(calls) == n:
        die()
if moment == "average":
    wrap(recipe, "load_file", lambda *a, **k: count(int(detail)))
if moment == "final-save":
    wrap(pathlib.Path, "replace", lambda self, target: pathlib.Path(target).parent.name == "model"
         and count(int(detail)))
train_translation.main(sys.argv[1:])
"""


def job(output_dir: Path, *extra: str, kill_at: str | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "KILL_AT": kill_at or "", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-c", KILLED_JOB, *TINY_RUN, "--output-dir", str(output_dir), *extra]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(process: subprocess.Popen) -> tuple[int, str]:
    out, err = process.communicate(timeout=600)
    return process.returncode, out + err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The tiny job of 12 steps run whole (its final model the average of the checkpoints of steps 6, 9 and 12)."""
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    code, log = finish(job(output_dir, "--max-steps", "12"))
    assert code == 0, log[-3000:]
    return output_dir


KILL_MOMENTS = {  # the moment: its KILL_AT (see KILLED_JOB)
    "during a training step": "step:7",
    "during the validation loss": "evaluate:6",
    "during a checkpoint save": "save:" + os.path.join("checkpoint-9", "optimizer.pt"),
    "during the averaging": "average:2",
    "during the final save": "final-save:2",
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_job_killed_then_resumed_ends_with_the_uninterrupted_weights(moment, uninterrupted, tmp_path):
    killed = tmp_path / "killed"
    code, log = finish(job(killed, "--max-steps", "12", kill_at=KILL_MOMENTS[moment]))
    assert code == -9, f"the job was not killed where the test meant it to be:\n{log[-3000:]}"
    code, log = finish(job(killed, "--max-steps", "12", "--resume"))
    assert code == 0, log[-3000:]
    if moment == "during a checkpoint save":
        assert "checkpoint-9 was not completely written" in log and "moved aside" in log
        assert (killed / "incomplete-checkpoint-9" / "model.safetensors").is_file()  # the kill came after them
    # No checkpoint is left half-written where it would be loaded, and no staging folder of a killed save is left.
    assert all(recipe.is_complete_checkpoint(folder) for folder in recipe.checkpoints_in(killed))
    assert not list(killed.rglob(".saving-*"))
    for folder in ("last", "model"):  # the last step's weights, and the averaged final model
        resumed, whole = load_file(killed / folder / "model.safetensors"), load_file(uninterrupted / folder /
                                                                                     "model.safetensors")  # fmt: skip
        for name, tensor in whole.items():
            assert torch.equal(resumed[name], tensor), f"{folder}: {name}"  # fp32 and a fixed seed: bit-identical
    assert json.loads((killed / "model" / "eval_results.json").read_text())["averaged_checkpoints"] == [
        "checkpoint-6", "checkpoint-9", "checkpoint-12"]  # fmt: skip


@pytest.mark.slow
def test_a_budgeted_run_killed_and_resumed_trains_its_budget_in_all(tmp_path):
    """--time-budget counts the time trained before the kill (stored in each checkpoint's trainer state): the resumed
    run trains only the rest, so the two train the budget in all plus at most the steps since the last save."""
    budget, run = 12.0, tmp_path / "run"
    timed = ["--time-budget", f"{budget:.0f}s", "--save-steps", "2", "--max-eval-pairs", "2"]
    code, log = finish(job(run, *timed, kill_at="seconds:6"))
    assert code == -9, f"the job was not killed where the test meant it to be:\n{log[-3000:]}"
    state = json.loads((recipe.last_complete_checkpoint(run) / "trainer_state.json").read_text())
    before = state["stateful_callbacks"]["TimeBudget"]["attributes"]["trained_seconds"]
    assert 0 < before < budget
    code, log = finish(job(run, *timed, "--resume"))
    assert code == 0, log[-3000:]
    resumed = json.loads((run / "model" / "eval_results.json").read_text())["train_seconds"]
    # What the runs count (before + resumed) is the budget, give or take a step and the final save.
    assert budget - 0.5 < before + resumed < budget + 3, (before, resumed)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_exits_130_and_says_how_to_resume(tmp_path):
    import signal
    import time

    output_dir = tmp_path / "run"
    process = job(output_dir, "--max-steps", "100000", "--save-steps", "100000", "--average-checkpoints", "1")
    deadline = time.monotonic() + 300
    while not list(output_dir.glob("tensorboard/*")) and time.monotonic() < deadline:  # training has started
        time.sleep(0.5)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    code, log = finish(process)
    assert code == 130, log[-3000:]
    step = int(re.search(r"error: interrupted at step (\d+); checkpoint saved in \S+", log).group(1))
    assert f"checkpoint-{step}" in log and "Resume with the same command and --resume." in log
    assert recipe.is_complete_checkpoint(output_dir / f"checkpoint-{step}")
    assert "Traceback" not in log
    code, log = finish(job(output_dir, "--max-steps", str(step + 2), "--save-steps", "100000", "--average-checkpoints",
                           "1", "--resume"))  # fmt: skip
    assert code == 0, log[-3000:]
    assert json.loads((output_dir / "checkpoint-" f"{step + 2}" / "trainer_state.json").read_text())["global_step"] \
        == step + 2  # fmt: skip


def test_a_second_job_on_the_same_output_folder_is_refused(tmp_path, capsys):
    from vaswani.scripts import train_translation

    with recipe.OutputDirLock(tmp_path / "run"), pytest.raises(SystemExit) as refused:  # as another job holds it
        train_translation.main([*TINY_RUN, "--max-steps", "2", "--output-dir", str(tmp_path / "run")])
    message = str(refused.value.code)
    assert message == (f"error: {tmp_path / 'run'} is in use by another training job (process {os.getpid()}): wait "
                       "for it to end, or give this one another --output-dir.")  # fmt: skip
    assert not (tmp_path / "run" / "checkpoint-2").exists()  # refused before it trained
    # The lock goes with the process that held it: once released, the job runs.
    train_translation.main([*TINY_RUN, "--max-steps", "2", "--average-checkpoints", "1", "--output-dir",
                            str(tmp_path / "run")])  # fmt: skip
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


# ---- bad input: checkpoints, stdin -------------------------------------------------------------------------------
def damaged_copy(checkpoint: Path, folder: Path, damage) -> Path:
    shutil.copytree(checkpoint, folder)
    damage(folder)
    return folder


def truncate_weights(folder: Path):
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])


def overwrite_header(folder: Path):
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(b"\xff" * 64 + weights[64:])


def wrong_field_type(folder: Path):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "d_model": "big"}))


def tokenizer_of_another_model(folder: Path):
    other = vaswani.VaswaniTokenizer.train([t for pair in PAIRS for t in pair] * 8 + ["Zebra quagga okapi."] * 9,
                                           vocab_size=400, show_progress=False)  # fmt: skip
    other.save_pretrained(folder)


@pytest.mark.parametrize(
    "damage, message",
    [
        (truncate_weights, r"damaged/model\.safetensors is damaged \(safetensors: Error while deserializing header: "
                           r"incomplete metadata, file not fully covered\): the save was cut off or the file was "
                           r"changed; save the model again, or download it again"),
        (overwrite_header, r"damaged/model\.safetensors is damaged \(safetensors: Error while deserializing header: "
                           r"header too large\)"),
        (wrong_field_type, r"its config.json is not valid: .*d_model.*expected int, got str \(value: 'big'\)"),
        (tokenizer_of_another_model, r"its tokenizer has [\d,]+ tokens, its model [\d,]+ \(vocab_size\): the "
                                     r"tokenizer belongs to another model"),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)  # fmt: skip
def test_vaswani_translate_names_what_is_wrong_with_a_damaged_checkpoint(damage, message, checkpoint, tmp_path, capsys):
    folder = damaged_copy(checkpoint, tmp_path / "damaged", damage)
    status, err = run_console_script("vaswani-translate", [str(folder), "The house is small."], capsys)
    assert status == 2 and "Traceback" not in err
    assert re.search(message, err, flags=re.S), err


@pytest.mark.parametrize("load", [
    lambda folder: AutoModelForSeq2SeqLM.from_pretrained(folder),
    lambda folder: AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True),  # the checkpoint's own code
    lambda folder: vaswani.VaswaniForConditionalGeneration.from_pretrained(folder),
    lambda folder: vaswani.VaswaniModel.from_pretrained(folder),
], ids=["auto", "remote-code", "for-conditional-generation", "model"])  # fmt: skip
def test_from_pretrained_names_a_truncated_weights_file(load, checkpoint, tmp_path):
    """The Python API, as the quickstart teaches it: safetensors' own error names no file."""
    folder = damaged_copy(checkpoint, tmp_path / "damaged", truncate_weights)
    with pytest.raises(OSError) as raised:
        load(folder)
    assert str(raised.value) == (
        f"{folder / 'model.safetensors'} is damaged (safetensors: Error while deserializing header: incomplete "
        "metadata, file not fully covered): the save was cut off or the file was changed; save the model again, or "
        "download it again (for a Hub model, `force_download=True`)."
    )


def test_vaswani_translate_refuses_binary_and_empty_stdin(checkpoint):
    script = str(Path(sys.executable).with_name("vaswani-translate"))
    stdin = b"Das Haus\n" + bytes(range(256))  # a 0x0a among them: 0x80 is on line 3
    binary = subprocess.run([script, str(checkpoint)], input=stdin, capture_output=True)
    assert binary.returncode == 2
    assert binary.stderr.decode().endswith("error: stdin is not UTF-8 text (byte 0x80 on line 3): give sentences as "
                                           "UTF-8 text, one a line\n")  # fmt: skip
    empty = subprocess.run([script, str(checkpoint)], input=b"", capture_output=True)
    assert empty.returncode == 2
    assert empty.stderr.decode().endswith("error: no sentences given (as arguments or on stdin)\n")
    crlf = subprocess.run([script, str(checkpoint)], input=b"The house is small.\r\n", capture_output=True)
    assert crlf.returncode == 0 and crlf.stdout.decode() == "Das Haus ist klein.\n", crlf.stderr[-2000:]


def test_vaswani_translate_streams_stdin_a_chunk_at_a_time(checkpoint):
    """Each chunk of stdin is translated and printed before the next is read, so a file of any length keeps memory
    flat: the first line's translation comes back while stdin is still open."""
    script = str(Path(sys.executable).with_name("vaswani-translate"))
    process = subprocess.Popen([script, str(checkpoint), "--chunk-lines", "1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        process.stdin.write(b"The house is small.\n")
        process.stdin.flush()
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no translation of the first chunk while stdin is open: vaswani-translate reads all of it first"
        assert process.stdout.readline() == b"Das Haus ist klein.\n"  # stdin not yet closed
        process.stdin.write(b"\nThe world is big.\n")
        process.stdin.close()
        assert process.stdout.read().decode() == "\nDie Welt ist groß.\n"
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()


# ---- bad input: training files ------------------------------------------------------------------------------------
GOOD_TSV = "".join(f"{source}\t{target}\n" for source, target in PAIRS)


def job_on(tmp_path: Path, train: bytes, validation: bytes | None = None) -> list[str]:
    """The job's arguments for a training file of bytes `train` (the validation and test files: GOOD_TSV)."""
    (tmp_path / "train.tsv").write_bytes(train)
    (tmp_path / "valid.tsv").write_bytes(validation if validation is not None else GOOD_TSV.encode())
    return [*TINY_RUN, "--max-steps", "2", "--average-checkpoints", "1", "--train-file", str(tmp_path / "train.tsv"),
            "--validation-file", str(tmp_path / "valid.tsv"), "--test-file", str(tmp_path / "valid.tsv"),
            "--output-dir", str(tmp_path / "run")]  # fmt: skip


@pytest.mark.parametrize(("train", "message"), [
    (b"The house is small.\tDas Haus ist klein.\nThe world is big. Die Welt ist gross.\n",
     "train.tsv:2: expected 2 tab-separated columns (source, target), got 1."),
    (GOOD_TSV.encode() + b"Caf\xe9\tCaf\xe9\n", "train.tsv:5: not UTF-8 text (byte 0xe9): save the file as UTF-8."),
    (b"", "holds no sentence pairs."),
    (b"\n\t\n", "holds no sentence pairs."),
], ids=["a line without a tab", "invalid UTF-8 (Latin-1)", "an empty file", "only blank lines"])  # fmt: skip
def test_a_bad_training_file_is_refused_naming_file_and_line_before_any_work(train, message, tmp_path):
    from vaswani.scripts import train_translation

    with pytest.raises(SystemExit) as refused:
        train_translation.main(job_on(tmp_path, train))
    assert str(refused.value.code).startswith("error: ") and str(refused.value.code).endswith(message)
    assert str(tmp_path / "train.tsv") in str(refused.value.code)
    assert not (tmp_path / "run").exists()  # refused before the output folder was made


def test_crlf_line_ends_and_a_byte_order_mark_read_as_plain_lines(tmp_path):
    from vaswani.scripts import data

    path = tmp_path / "train.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_TSV.replace("\n", "\r\n").encode())  # as Windows Notepad saves it
    assert data.read_pairs(path) == PAIRS
    (tmp_path / "src.txt").write_bytes(b"\xef\xbb\xbfThe house is small.\r\nThe world is big.\r\n")
    (tmp_path / "tgt.txt").write_bytes(b"Das Haus ist klein.\rDie Welt ist gro\xc3\x9f.")  # old Mac line ends, no last
    assert data.read_line_pair(tmp_path / "src.txt", tmp_path / "tgt.txt") == PAIRS[:2]


def test_blank_lines_and_empty_sides_are_skipped_and_counted_in_the_log(tmp_path, caplog):
    from vaswani.scripts import data

    path = tmp_path / "train.tsv"
    path.write_text(f"{GOOD_TSV}\nA lonely source.\t\n\tEin einsames Ziel.\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="vaswani.scripts.data"):
        assert data.read_pairs(path) == PAIRS
    assert caplog.messages == [f"{path}: skipped 3 of 7 lines, blank or with an empty side (line 5, 6, 7)."]


def test_a_training_file_of_one_line_trains(tmp_path):
    from vaswani.scripts import train_translation

    results = train_translation.run(train_translation.parse_args(job_on(tmp_path, b"The house is small.\tDas Haus "
                                                                                  b"ist klein.")))  # fmt: skip
    assert results["steps"] == 2 and (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_validation_pairs_from_the_training_file_get_a_leak_warning(tmp_path, caplog):
    from vaswani.scripts import data

    (tmp_path / "train.tsv").write_text(GOOD_TSV, encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("The house is small.\tDas Haus ist klein.\nA new one.\tEin neuer.\n",
                                        encoding="utf-8")  # fmt: skip
    with caplog.at_level("WARNING", logger="vaswani.scripts.data"):
        data.load_files([tmp_path / "train.tsv"], [tmp_path / "valid.tsv"], [tmp_path / "train.tsv"])
    assert caplog.messages == [
        "1 of the 2 validation pairs are also in the training data: the validation figures overstate how well the "
        "model translates new text. Give validation pairs that are not in the training file.",
        "4 of the 4 test pairs are also in the training data: the test figures overstate how well the model "
        "translates new text. Give test pairs that are not in the training file."]  # fmt: skip


# ---- bad input: longer than the model's positions -----------------------------------------------------------------
LONG = "The house is small and the world is big. " * 40  # about 400 tokens: past the tiny preset's 256 positions


def test_a_line_longer_than_learned_positions_is_refused_before_any_work(tmp_path):
    learned = train_checkpoint(tmp_path / "learned", position_embedding_type="learned", max_position_embeddings=16)
    script = str(Path(sys.executable).with_name("vaswani-translate"))
    result = subprocess.run([script, str(learned)], input=f"The house is small.\n\n{LONG}\n".encode(),
                            capture_output=True)  # fmt: skip
    assert result.returncode == 2 and result.stdout == b""  # nothing translated: the check comes first
    assert re.search(r"error: line 3 is \d+ tokens long, but this model's positions stop at 16 "
                     r"\(`max_position_embeddings`\): shorten or split it\n$", result.stderr.decode())  # fmt: skip


def test_a_sentence_longer_than_the_sinusoid_table_translates_whole(checkpoint):
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint)
    tokenizer = vaswani.VaswaniTokenizer.from_pretrained(checkpoint)
    batch = tokenizer([LONG], return_tensors="pt")
    assert batch.input_ids.shape[1] > model.config.max_position_embeddings
    [translation] = recipe.translate(model, tokenizer, [LONG], num_beams=1, progress=False)
    whole = model.generate(**batch, num_beams=1, max_new_tokens=batch.input_ids.shape[1] + 50)  # every input token
    assert translation and translation == tokenizer.decode(whole[0], skip_special_tokens=True).strip()


# ---- load ---------------------------------------------------------------------------------------------------------
def test_the_pipeline_called_from_4_threads_at_once_gives_the_serial_outputs(checkpoint):
    from concurrent.futures import ThreadPoolExecutor

    translator = vaswani.pipeline("translation", str(checkpoint))
    sentences = [source for source, _ in PAIRS] * 4 + ["The house is big.", "I see the world.", "The child."]

    def translate(sentence: str) -> str:
        return translator(sentence, num_beams=4)[0]["translation_text"]

    serial = [translate(sentence) for sentence in sentences]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(translate, sentences))
    assert parallel == serial and serial[:4] == [target for _, target in PAIRS]


def test_reliability_table_names_every_test_here():
    """docs/reliability.md is the table of these tests: each named once, in a row of its own, and none that is gone."""
    table = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"\| `(test_\w+)` \|$", table, flags=re.M)
    here = sorted(name for name in globals() if name.startswith("test_"))
    assert sorted(named) == here, f"in the table only: {set(named) - set(here)}; here only: {set(here) - set(named)}"
