"""Checkpoint plumbing that is not the paper: atomic saves, the code files a checkpoint carries, the pipelines it
registers, the model card on the Hub, and a clear error for a damaged weights file.

`modeling_vaswani.py` calls these from `VaswaniPreTrainedModel`, so that it reads as the paper. Like it, this file is
copied flat into every checkpoint and imports only torch, transformers, safetensors and its siblings.
"""

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from safetensors import SafetensorError


def push_with_model_card(model, repo_id: str, *, commit_message, commit_description, private, token, revision,
                         create_pr, max_shard_size, tags) -> str | None:  # fmt: skip
    """`VaswaniPreTrainedModel.push_to_hub`'s upload: the self-contained checkpoint with vaswani's model card, in one
    commit. Returns the commit URL, or None where the plugin is not installed (remote code), for the caller to fall
    back to transformers' own `push_to_hub` and card."""
    from huggingface_hub import ModelCard, create_repo
    from huggingface_hub.errors import EntryNotFoundError

    try:
        from vaswani.modeling.model_card import CARD_TAG, model_card
    except ImportError:  # loaded as remote code, without the plugin
        return None
    repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
    try:
        card = ModelCard.load(repo_id, token=token)
    except EntryNotFoundError:
        card = None
    if card is None or CARD_TAG not in (card.data.tags or []):
        card = model_card(model, repo_id)
    card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *(tags or [])]))
    with tempfile.TemporaryDirectory() as work_dir:
        model.save_pretrained(work_dir, max_shard_size=max_shard_size)
        card.save(Path(work_dir) / "README.md")
        return model._upload_modified_files(
            work_dir, repo_id, files_timestamps={}, commit_message=commit_message, token=token,
            create_pr=create_pr, revision=revision, commit_description=commit_description,
        )  # fmt: skip


def save_with_code(save: Callable[[Path], None], directory) -> None:
    """`save_pretrained`'s writes: `save(staging)` (transformers' own save) and the code files
    (`checkpoint_code_files`) into a staging folder, then moved into `directory` file by file (`save_atomically`).

    transformers' own code saving (`register_for_auto_class`) copies only files in the model file's folder; in the
    installed package the config lives in a sibling folder, so the files are copied here instead."""

    def save_with_code_files(staging: Path) -> None:
        save(staging)
        for source in checkpoint_code_files():
            shutil.copyfile(source, staging / source.name)

    save_atomically(save_with_code_files, Path(directory))


WEIGHT_FILE_PATTERNS = ("model*.safetensors", "model*.safetensors.index.json", "pytorch_model*.bin*")


class DamagedWeightsError(OSError):
    """A checkpoint's weights file that safetensors cannot read (a save cut off, a file changed): the message names
    the file and says what to do. An OSError, as transformers' other loading errors are; `safetensors_error` is
    safetensors' own message."""

    def __init__(self, location, error: Exception):
        self.safetensors_error = str(error)
        folder = Path(str(location))
        files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        where = ", ".join(map(str, files)) if files else f"the .safetensors weights of {location}"
        super().__init__(
            f"{where} is damaged (safetensors: {error}): the save was cut off or the file was changed; "
            "save the model again, or download it again (for a Hub model, `force_download=True`)."
        )


def save_atomically(save: Callable[[Path], None], directory: Path) -> None:
    """Calls `save(staging)` on a fresh folder inside `directory`, then renames each file it wrote into `directory`
    (a rename within one file system is atomic) and removes weight files of an earlier save that this one did not
    write (a sharded checkpoint replaced by one file). On an OSError before the renames (a full disk, a read-only
    folder) nothing in `directory` has changed, and the error says so."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".saving-{os.getpid()}-", dir=directory))
    except OSError as error:
        raise OSError(f"Could not save into {directory}: {error}. Nothing was written; give a folder you can write "
                      "to.") from error  # fmt: skip
    try:
        try:
            save(staging)
        except (OSError, SafetensorError) as error:  # safetensors reports a full disk as its own error
            raise OSError(f"Could not save into {directory}: {error}. Nothing in {directory} was changed (the files "
                          "were being written to a staging folder, now removed): free space or give another "
                          "folder, and save again.") from error  # fmt: skip
        written = {path.name for path in staging.iterdir()}
        # Weights first, config last: a reader that sees the new config.json sees the new weights.
        for path in sorted(staging.iterdir(), key=lambda path: path.name == "config.json"):
            path.replace(directory / path.name)
        for pattern in WEIGHT_FILE_PATTERNS:
            for stale in directory.glob(pattern):
                if stale.name not in written:
                    stale.unlink()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    remove_abandoned_staging(directory)


def remove_abandoned_staging(directory: Path) -> None:
    """Removes the staging folders in `directory` of saves whose process is gone (killed mid-save: SIGKILL runs no
    cleanup), so that they do not pile up or travel with the folder to the Hub. A live process's are kept."""
    for folder in directory.glob(".saving-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not process_is_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def checkpoint_code_files() -> list[Path]:
    """The code files every checkpoint carries, so that it loads with `trust_remote_code=True` where vaswani is not
    installed: the model file, the config's, this file, the compatibility shims, the loss kernel and the pipeline's
    (the tokenizer saves its own)."""
    # Siblings of this file in the package and in the checkpoint alike; imported here (not at the top: the model file
    # imports this one) so that transformers also fetches them with this file when a checkpoint loads as remote code.
    from . import compat_vaswani, kernels_vaswani, modeling_vaswani, pipeline_vaswani

    modules = (
        modeling_vaswani.VaswaniConfig.__module__,
        modeling_vaswani.__name__,
        __name__,
        compat_vaswani.__name__,
        kernels_vaswani.__name__,
        pipeline_vaswani.__name__,
    )
    return [Path(sys.modules[module].__file__) for module in modules]


def translation_pipelines() -> dict:
    """The config entry that makes `pipeline("translation" | "text2text-generation", model=..., trust_remote_code=True)`
    load the checkpoint's `VaswaniTranslationPipeline`: transformers 5 removed both tasks from its own pipelines."""
    from .pipeline_vaswani import VaswaniTranslationPipeline

    impl = f"{VaswaniTranslationPipeline.__module__.rsplit('.', 1)[-1]}.{VaswaniTranslationPipeline.__name__}"
    entry = {"impl": impl, "pt": ["AutoModelForSeq2SeqLM"], "type": "text"}
    return {"translation": dict(entry), "text2text-generation": dict(entry)}
