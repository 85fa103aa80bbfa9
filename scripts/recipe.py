"""The paper's training recipe as pieces that plug into transformers' Seq2SeqTrainer (Section 5), plus evaluation.

- `paper_learning_rate`: linear warmup, then inverse square-root decay (Section 5.3).
- `TokenBudgetTrainer`: Seq2SeqTrainer whose batches are formed by token count (Section 5.1) and whose learning rate
  follows Section 5.3.
- `TimeBudget`: stops training after a wall-clock budget (the job must fit a laptop's afternoon, or CI's minutes) and
  places the checkpoints to average in the last part of training; `BudgetProgress` shows progress against it.
- `average_checkpoints`: the mean of the last N checkpoints' weights (Section 6.1: "averaging the last 5 checkpoints").
- `evaluate_translation`: beam search with the paper's settings, scored with sacreBLEU (BLEU and chrF).
"""

import fcntl
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import ProgressCallback, Seq2SeqTrainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from vaswani.modeling.checkpoint_vaswani import DamagedWeightsError
from vaswani.modeling.pipeline_vaswani import is_onnx_export

logger = logging.getLogger(__name__)
MIN_TIME_BUDGET_SECONDS = 10  # one step of the small model plus one checkpoint save, on a 2-core CPU


def command_line_logging() -> None:
    """The console scripts' output: log records as plain lines on stderr, and none of transformers' progress bars
    for loading and writing weights ("Loading weights", "Writing model shards": one per save, 34 in a training log,
    each done in a blink). The scripts' own bars (training, translating) stay."""
    from transformers.utils import logging as transformers_logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    transformers_logging.disable_progress_bar()


def paper_learning_rate(step: int, d_model: int, warmup_steps: int, peak: float | None = None) -> float:
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5), Section 5.3, with steps counted from 1.

    This equals peak * min(step / warmup, sqrt(warmup / step)) with peak = (d_model * warmup_steps)^-0.5, reached
    at step = warmup_steps. `peak` replaces that value when given (the shape is unchanged).
    """
    step = max(step, 1)
    if peak is None:
        return d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)
    return peak * min(step / warmup_steps, math.sqrt(warmup_steps / step))


class TokenBudgetTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with token-count batches and the paper's learning-rate schedule.

    `batch_sampler` (a `data.TokenBatchSampler`, or None for Trainer's own batches) forms the training batches;
    with it, cuDNN's attention is left out of SDPA on a CUDA GPU (`attention_without_per_shape_plans`);
    `d_model` and `warmup_steps` shape the schedule (`paper_learning_rate`). Other arguments are Seq2SeqTrainer's.

    `args.learning_rate` is set to the schedule's peak and the LambdaLR factor shapes it, so the optimizer (Adam,
    with betas and epsilon from the arguments) and everything Trainer does with it (resume, logging) stay standard.

    `smoothing_in_model`: the model computes the label-smoothed loss itself (vaswani's `forward(labels=...,
    label_smoothing=...)`), given `args.label_smoothing_factor`, instead of Trainer's `LabelSmoother`. The same loss;
    under bf16 autocast the model computes it from its bf16 logits, where Trainer gets them after accelerate has
    copied them to float32, a copy of the (tokens x vocabulary) logits forward and another backward
    (docs/performance.md).
    """

    def __init__(self, *args, batch_sampler=None, d_model: int, warmup_steps: int, smoothing_in_model: bool = False,
                 **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.batch_sampler = batch_sampler
        self.d_model, self.warmup_steps = d_model, warmup_steps
        self.model_label_smoothing = 0.0
        if smoothing_in_model and self.label_smoother is not None:
            self.model_label_smoothing, self.label_smoother = self.label_smoother.epsilon, None  # labels stay in

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.model_label_smoothing and "labels" in inputs:
            inputs = {**inputs, "label_smoothing": self.model_label_smoothing}
        return super().compute_loss(model, inputs, *args, **kwargs)

    def get_train_dataloader(self):
        if self.batch_sampler is None:
            return super().get_train_dataloader()
        attention_without_per_shape_plans()  # token-count batches: a new shape nearly every step
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        return self.accelerator.prepare(loader)  # shards batches across processes

    def evaluate(self, *args, **kwargs):
        """Evaluation inside a forked RNG: its data loader draws seeds from the global generator, so otherwise
        whether an evaluation ran before a checkpoint (Trainer evaluates at the last step) would change the dropout
        masks after resuming, and a resumed run would not end where an uninterrupted one ends."""
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            return super().evaluate(*args, **kwargs)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            peak = self.args.learning_rate

            def factor(step: int) -> float:  # LambdaLR counts from 0; the paper from 1
                return paper_learning_rate(step + 1, self.d_model, self.warmup_steps, peak) / peak

            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
            self._created_lr_scheduler = True
        return self.lr_scheduler


def parse_duration(text: str) -> float:
    """`text` such as '90s', '15m', '1h30m', '1.5h', or a bare number of minutes -> seconds. Anything else raises a
    ValueError showing the accepted forms."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 60
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms])", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"Cannot read the duration {text!r}: use e.g. 90s, 15m, 1h30m.")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


class TimeBudget(TrainerCallback, ExportableState):
    """A Trainer callback that ends training at a wall-clock budget and places the checkpoints to average.

    `TimeBudget(seconds, average=5, average_span=0.1)`: stops training (with a final checkpoint save) once `seconds`
    of training have passed, and saves `average` checkpoints spread evenly over the last `average_span` of
    training, the last one at its end (Trainer's interval saves stop in that span, so these are the last ones).
    Progress is the larger of elapsed / `seconds` and step / `max_steps`, so the
    same holds when `--max-steps` ends the run first (then the saves fall on fixed steps and a resumed run saves
    where an uninterrupted one does). Section 6.1 averages the last 5 checkpoints, written every 10 minutes of a
    12-hour run (the last 6% of it); a short run has to place them, because a fixed interval in steps means a
    different share of training on every machine.

    The time trained so far goes into every checkpoint (its trainer_state.json, as an `ExportableState`), and a
    resumed run counts it: a run killed and resumed trains its budget in all, plus at most the steps since the last
    save, which it trains again (it got its whole budget again before).
    """

    def __init__(self, seconds: float, average: int = 5, average_span: float = 0.1):
        self.seconds, self.start, self.start_step, self.before = seconds, None, 0, 0.0
        self.average, self.average_span = average, average_span
        spacing = average_span / max(average - 1, 1)
        self.save_points = [1.0 - spacing * k for k in range(max(average, 1))][::-1]  # e.g. 0.9, 0.925, ..., 1.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.start_step = time.monotonic(), state.global_step
        # A resumed run's state is the checkpoint's: the seconds its earlier runs trained (none before this record).
        stored = getattr(state, "stateful_callbacks", {}).setdefault(type(self).__name__, self.state())
        self.before = float(stored.get("attributes", {}).get("trained_seconds", 0.0))
        self.saved = sum(point <= state.global_step / state.max_steps for point in self.save_points)  # on resume

    def elapsed(self) -> float:
        """Seconds trained, by this run and the runs it resumed."""
        return self.before + (time.monotonic() - self.start if self.start is not None else 0.0)

    def state(self) -> dict:
        return {"args": {"seconds": self.seconds, "average": self.average, "average_span": self.average_span},
                "attributes": {"trained_seconds": round(self.elapsed(), 3)}}  # fmt: skip

    def progress(self, state) -> float:
        """The share of training done, 0 to 1: elapsed time of the budget, or steps of max_steps if further."""
        return min(max(self.elapsed() / self.seconds, state.global_step / state.max_steps), 1.0)

    def on_step_end(self, args, state, control, **kwargs):
        progress = self.progress(state)
        if progress >= self.save_points[0]:  # the averaged span: its saves are exactly the placed ones
            control.should_save = self.saved < len(self.save_points) and progress >= self.save_points[self.saved]
            self.saved = sum(point <= progress for point in self.save_points)  # one save even if a step passed two
        if self.elapsed() >= self.seconds:
            logger.info("Time budget of %.0fs reached at step %d: stopping.", self.seconds, state.global_step)
            control.should_training_stop = True
            control.should_save = True
        return control


class BudgetProgress(ProgressCallback):
    """The run's one progress bar, measured against its real end: the share of the time budget (or of --max-steps,
    whichever is further) with the elapsed and remaining time, the step and the last training loss, instead of
    epochs x batches (which counted to 551,000 steps and 86 hours for a 15-minute run). At each validation, one log
    line: step, training and validation loss, learning rate, time elapsed and left. Trainer's own callback printed
    every log dict into the bar and drew a bar for every validation; the dicts are in TensorBoard."""

    def __init__(self, budget: TimeBudget):
        super().__init__()
        self.budget, self.loss, self.learning_rate = budget, None, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.current_step = state.global_step
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=1000, dynamic_ncols=True, desc="training",
                                     bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")  # fmt: skip

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            done = round(1000 * self.budget.progress(state))
            self.training_bar.update(max(done - self.training_bar.n, 0))
            loss = f", loss {self.loss:.3f}" if self.loss is not None else ""
            self.training_bar.set_postfix_str(f"step {state.global_step}{loss}", refresh=False)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass  # no bar for the validation loss: it takes a second or two

    def on_evaluate(self, args, state, control, **kwargs):
        pass

    def on_predict(self, args, state, control, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self.loss = logs.get("loss", self.loss)
        self.learning_rate = logs.get("learning_rate", self.learning_rate)
        if "eval_loss" in logs and state.is_world_process_zero:
            with tqdm.external_write_mode(file=sys.stderr):  # on a line of its own, not after the bar's
                logger.info(self.summary(state, logs["eval_loss"]))

    def summary(self, state, validation_loss: float) -> str:
        """The line at a validation: step 200: training loss 5.123, validation loss 4.987, learning rate 6.7e-04, 1:02
        elapsed, 13:58 left."""
        elapsed, progress = self.budget.elapsed(), self.budget.progress(state)
        left = elapsed * (1 - progress) / progress if progress > 0 else 0.0
        loss = f"training loss {self.loss:.3f}, " if self.loss is not None else ""
        rate = f", learning rate {self.learning_rate:.1e}" if self.learning_rate is not None else ""
        return (f"step {state.global_step}: {loss}validation loss {validation_loss:.3f}{rate}, "
                f"{minutes_seconds(elapsed)} elapsed, {minutes_seconds(left)} left")  # fmt: skip


def minutes_seconds(seconds: float) -> str:
    """90.4 -> "1:30"."""
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def attention_without_per_shape_plans() -> bool:
    """Leaves cuDNN's attention out of torch's SDPA on a CUDA GPU, for the rest of the process; True where it did.

    Why: token-count batches come in a new shape nearly every step (88 shapes in 100 steps of the main job), and
    cuDNN's attention, which torch 2.11's SDPA picks for bf16 on a Hopper GPU, builds a plan for each new shape on
    the CPU: 40 ms per attention call forward and 43 ms backward. On an H200 that was 92% of the job's step (2.5
    steps/s, slower than on 2 CPU cores; docs/performance.md). Flash and memory-efficient attention, which SDPA
    picks instead, need no plan. A CPU has no cuDNN: nothing changes there. `TokenBudgetTrainer` calls it when it
    forms token-count batches."""
    if not torch.cuda.is_available() or not torch.backends.cuda.cudnn_sdp_enabled():
        return False
    torch.backends.cuda.enable_cudnn_sdp(False)
    logger.info("CUDA: SDPA without cuDNN attention, which plans anew for every batch shape")
    return True


def bf16_matmul_speedup(rows: int, inner: int, columns: int) -> float:
    """How many times faster this machine multiplies bfloat16 matrices than float32 ones, at one of the model's own
    shapes: (rows x inner) @ (inner x columns). The best of 5 timed rounds of 4 products in each dtype, after a
    warm-up in which oneDNN builds its kernels; about 0.2 s on 2 CPU cores for the job's 1,000 x 256 x 1,024."""

    def best_seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, columns, dtype=dtype)
        for _ in range(3):
            a @ b
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            best = min(best, time.perf_counter() - start)
        return best

    return best_seconds(torch.float32) / best_seconds(torch.bfloat16)


def checkpoints_in(output_dir: Path) -> list[Path]:
    """Trainer's checkpoint-<step> folders in `output_dir`, oldest first."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def require_at_least_one(parser, args, *flags: str) -> None:
    """`parser.error` ("--batch-size must be at least 1") for the first of the options `flags` (their dest names)
    that is set and below 1: a zero or negative count would run nothing, or fail deep inside the work."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")


def is_complete_checkpoint(folder: Path) -> bool:
    """Trainer writes trainer_state.json last of a checkpoint's files: a folder without it (or with a half-written
    one, or without its weights) is one whose save was cut off."""
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / "model.safetensors").is_file() and (folder / "optimizer.pt").is_file()


def checkpoint_reached(folder: Path, max_steps: int | None) -> bool:
    """Whether the checkpoint in `folder` is at or past `max_steps` (None: no step limit), by its trainer_state."""
    state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    return max_steps is not None and state["global_step"] >= max_steps


def load_ended_run(trainer, folder: Path) -> None:
    """Gives `trainer` the state and weights of the checkpoint in `folder`, of a run whose training had ended, as
    `trainer.train(resume_from_checkpoint=folder)` would, without the extra step that takes: the log history (for
    the curves), the step count and the model's weights."""
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(folder / "trainer_state.json"))
    # strict=False: the file leaves out the tied embeddings and output projection, which tie_weights restores
    trainer.model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
    trainer.model.tie_weights()
    logger.info("Resumed from %s, whose training had ended at step %d: no steps left to train.", folder,
                trainer.state.global_step)  # fmt: skip


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint-<step> folder in `output_dir`. Newer incomplete ones (a save cut off by a
    crash or a kill) are renamed to `incomplete-checkpoint-<step>`, with a warning, so that neither resuming nor
    averaging reads them."""
    complete = None
    for folder in checkpoints_in(output_dir):
        if is_complete_checkpoint(folder):
            complete = folder
            continue
        aside = folder.with_name(f"incomplete-{folder.name}")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        logger.warning("%s was not completely written (its save was cut off): moved aside to %s; resuming from the "
                       "last complete checkpoint", folder, aside)  # fmt: skip
    return complete


class OutputDirLock:
    """An exclusive lock on `output_dir` for one job (`fcntl.flock` on output_dir/.lock, released by the kernel when
    the process ends, however it ends). A second job on the same folder is refused at once, before it writes."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / ".lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise OutputDirBusyError(
                f"{self.path.parent} is in use by another training job (process {holder}): wait for it to end, or "
                "give this one another --output-dir."
            ) from None
        self.file.truncate(0)
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()  # releases the lock


class OutputDirBusyError(RuntimeError):
    pass


class Interrupted(Exception):
    """Raised by the job after a Ctrl-C was answered with a checkpoint."""


class SaveOnInterrupt(TrainerCallback):
    """Ctrl-C (SIGINT) during training: the step under way finishes, a checkpoint is saved and training stops, so that
    `--resume` continues from it. A second Ctrl-C interrupts at once (Python's KeyboardInterrupt)."""

    def __init__(self):
        self.interrupted_at: int | None = None
        self.requested = False
        self.previous = None

    def on_train_begin(self, args, state, control, **kwargs):
        if threading_main():
            self.previous = signal.signal(signal.SIGINT, self.request)

    def request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second one interrupts at once
        logger.warning("Interrupted: saving a checkpoint after this step (Ctrl-C again to stop without one)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
            self.interrupted_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def average_checkpoints(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights in the checkpoint folders `paths` (model.safetensors each), as in
    Section 6.1 (the last 5 checkpoints). Load the result with `model.load_state_dict(...)`."""
    if not paths:
        raise ValueError("No checkpoints to average.")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, tensor in load_file(Path(path) / "model.safetensors").items():
            total[name] = total.get(name, 0) + tensor.double()
    return {name: (tensor / len(paths)).float() for name, tensor in total.items()}


def saved_models_in(folder: Path) -> str:
    """A hint naming the saved models one level inside `folder`, such as the job's --output-dir (runs/en-de) whose
    final model is runs/en-de/model, among its checkpoints; "" if there are none."""
    inner = sorted(str(config.parent) for config in folder.glob("*/config.json"))
    if str(folder / "model") in inner:
        return f" Did you mean {folder / 'model'}?"
    return f" The saved models in it: {', '.join(inner[:3])}{', ...' if len(inner) > 3 else '.'}" if inner else ""


def check_model_location(name: str) -> str:
    """`name` if it is a folder or could be a Hub id ("owner/name"); otherwise a ValueError saying it is neither
    (transformers would say "Repo id must be in the form 'repo_name'..." of a mistyped folder)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ValueError(f"{name} is a folder without config.json, not a saved model.{saved_models_in(Path(name))}")
        return name
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ValueError(
            f"{name} is neither a folder nor a Hub id (owner/name): give the folder of a saved model and its "
            "tokenizer, e.g. runs/en-de/model."
        ) from None
    if Path(name).exists():
        raise ValueError(f"{name} is a file: give the folder that holds the model and its tokenizer.")
    return name


def load_model_and_tokenizer(name: str, trust_remote_code: bool = False):
    """The model and tokenizer saved in folder or Hub id `name`, or a ValueError that says which it was taken for
    and why it did not load (a missing folder of the form "owner/name" is tried on the Hub)."""
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    check_model_location(name)
    try:
        if is_onnx_export(name):  # an export of vaswani-export-onnx: ONNX Runtime runs it
            from vaswani.modeling.onnxruntime_vaswani import ORTModelForSeq2SeqLM

            model = ORTModelForSeq2SeqLM.from_pretrained(name)
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(name, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except DamagedWeightsError as error:  # vaswani's from_pretrained names the file and says what to do
        raise ValueError(f"cannot load {name}: {error}") from None
    except OSError as error:
        taken_for = "" if Path(name).is_dir() else f"there is no folder {name} here, and as a Hub id: "
        raise ValueError(f"cannot load a model and tokenizer from {name}: {taken_for}{error}") from None
    except SafetensorError as error:  # a truncated or overwritten file: safetensors does not name it
        raise ValueError(f"cannot load {name}: its weights file is damaged (safetensors: {error}); the save was cut "
                         "off or the file was changed: save or download the checkpoint again.") from None  # fmt: skip
    except StrictDataclassError as error:  # a config.json field of the wrong type
        raise ValueError(f"cannot load {name}: its config.json is not valid: {error}".rstrip()) from None
    if len(tokenizer) > model.config.vocab_size:  # ids past the embedding table would fail deep inside torch
        raise ValueError(f"cannot use {name}: its tokenizer has {len(tokenizer):,} tokens, its model "
                         f"{model.config.vocab_size:,} (vocab_size): the tokenizer belongs to another model; save "
                         "the model with the tokenizer it was trained with.")  # fmt: skip
    return model, tokenizer


def runtime_name(model) -> str:
    """Which runtime and precision decode with `model`, for the CLIs to say: "PyTorch 2.13.0+cpu (float32)" or
    "ONNX Runtime 1.32.0 (int8, CPUExecutionProvider)"."""
    if hasattr(model, "decoder_with_past_session"):
        import onnxruntime

        precision = model.ort_config.get("quantization") or "float32"
        provider = model.decoder_with_past_session.session.get_providers()[0]
        return f"ONNX Runtime {onnxruntime.__version__} ({precision}, {provider})"
    return f"PyTorch {torch.__version__} ({str(model.dtype).removeprefix('torch.')})"


def length_batches(sentences: list[str], batch_size: int) -> list[list[int]]:
    """Indices of `sentences` in batches of `batch_size`, shortest first, so that a batch holds similar lengths
    (little padding, and an output bound of input + 50 close to each sentence's own)."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class TooLongError(ValueError):
    """A sentence is longer than the model's positions; `index` is its place in the list translated."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def position_limit(model) -> int | None:
    """The most positions `model` represents: vaswani's sinusoidal positions have no limit (Section 3.5: computed
    for any length); learned ones (Table 3 row (E)) and Marian's fixed sinusoid table stop at
    max_position_embeddings; an ONNX export covers the positions it was exported with (its graphs hold the table)."""
    if hasattr(model, "decoder_with_past_session"):  # ORTModelForSeq2SeqLM
        return model.max_positions
    config = model.config
    if config.model_type == "vaswani" and config.position_embedding_type == "sinusoidal":
        return None
    return config.max_position_embeddings


def check_lengths(model, tokenizer, sentences: list[str]) -> int | None:
    """Raises a TooLongError for the first of `sentences` longer than the model's positions, before any decoding
    (rather than truncate it silently, or fail inside the embedding); returns the limit (None: none)."""
    limit = position_limit(model)
    if limit is not None:
        for index, ids in enumerate(tokenizer(sentences).input_ids):
            if len(ids) > limit:
                raise TooLongError(index, f"sentence {index + 1} is {len(ids)} tokens long, but this model's positions "
                                          f"stop at {limit} (`max_position_embeddings`): shorten or split it")  # fmt: skip
    return limit


@torch.no_grad()
def translate(model, tokenizer, sentences: list[str], num_beams: int = 4, length_penalty: float = 0.6,
              batch_size: int = 32, max_offset: int = 50, progress: bool = True,
              description: str = "translating") -> list[str]:  # fmt: skip
    """Beam search translation of `sentences` with `model` and `tokenizer`, returned as strings in input order.

    The paper's decoding by default (Section 6.1): `num_beams` 4, `length_penalty` (alpha) 0.6, maximum output
    length input length + `max_offset` (50). Sentences are decoded in batches of `batch_size` sentences of similar
    length (then put back in order), so that the output bound is the batch's longest input + 50, within a few
    tokens of each sentence's own. `progress` shows a progress bar (`description` names it). Inputs are never truncated: one longer than a
    model with learned positions can take raises a TooLongError first (`check_lengths`), and there the output
    bound stops at the last position, with a warning."""
    model.eval()
    limit = check_lengths(model, tokenizer, sentences)
    outputs: list[str] = [""] * len(sentences)
    for indices in tqdm(length_batches(sentences, batch_size), desc=description, disable=not progress):
        batch = tokenizer([sentences[i] for i in indices], return_tensors="pt", padding=True)
        batch = batch.to(model.device)
        max_new_tokens = batch["input_ids"].shape[1] + max_offset
        if limit is not None and max_new_tokens > limit - 1:  # the decoder start token takes position 0
            logger.warning("Outputs bounded at %d tokens by the model's %d positions (input + %d would be %d).",
                           limit - 1, limit, max_offset, max_new_tokens)  # fmt: skip
            max_new_tokens = limit - 1
        generated = model.generate(
            **batch, num_beams=num_beams, length_penalty=length_penalty, max_new_tokens=max_new_tokens
        )  # fmt: skip
        for i, text in zip(indices, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[i] = text.strip()
    return outputs


GUARD_SENTENCES = 4  # validation sentences the cached-decoding check decodes


def check_cached_decoding(model, tokenizer, sentences: list[str], when: str) -> float:
    """Stops the job with a clear error when decoding with the cache computes something else than the model computes
    without it (`compat_vaswani.check_cached_decoding`): transformers 5.24 broke exactly this silently, and a job
    that evaluated and saved such a model exited 0 with looping translations.

    Checks the first `GUARD_SENTENCES` of `sentences`, encoded by `tokenizer`; `when` names the moment in the error
    ("before training"). Returns the largest difference found."""
    from vaswani.modeling.compat_vaswani import CachedDecodingError
    from vaswani.modeling.compat_vaswani import check_cached_decoding as check

    batch = tokenizer(sentences[:GUARD_SENTENCES], return_tensors="pt", padding=True, truncation=True)
    batch = batch.to(model.device)
    try:
        return check(model, batch["input_ids"], batch["attention_mask"])
    except CachedDecodingError as error:
        raise SystemExit(f"error: {when}: {error}") from None


def has_repeated_ngram(text: str, n: int = 4, times: int = 3) -> bool:
    """Whether some `n`-gram of whitespace-separated words occurs `times` or more times in `text`: the mark of a
    degenerate loop ("und seine Söhne und seine Söhne und seine Söhne")."""
    words = text.split()
    counts: dict[tuple[str, ...], int] = {}
    for start in range(len(words) - n + 1):
        gram = tuple(words[start : start + n])
        counts[gram] = counts.get(gram, 0) + 1
        if counts[gram] >= times:
            return True
    return False


def score(hypotheses: list[str], references: list[str]) -> dict:
    """Detokenized corpus BLEU and chrF of `hypotheses` against `references` (one reference per sentence) with
    sacreBLEU's default settings: {"bleu", "chrf", "bleu_signature", "chrf_signature", "bleu_details"}, with the
    hypothesis/reference length ratio and "looping_share", the share of hypotheses in which some 4-gram occurs 3
    or more times (`has_repeated_ngram`; "looping" in every table and log; `eval_results.json` files written before
    2026-12-07 call it "repeated_4gram_share")."""
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf_score.score, 2),
        "length_ratio": round(bleu_score.sys_len / max(bleu_score.ref_len, 1), 3),
        "looping_share": round(sum(map(has_repeated_ngram, hypotheses)) / max(len(hypotheses), 1), 4),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "bleu_details": str(bleu_score),
    }
