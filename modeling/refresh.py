"""Gives a saved vaswani checkpoint (a folder or a Hub repository) the code of the installed plugin.

Every checkpoint carries the code it was saved with, and `trust_remote_code=True` runs that code where vaswani is not
installed. Code saved by vaswani 0.1.0 takes the cache only as `past_key_values`; under transformers 5.24 and newer,
which pass it as `cache`, it decodes every step without its past: looping, wrong translations, and no error. (Where
the plugin is installed its own classes are used instead, so those users are not affected.)

`refresh_folder(folder)` and `refresh_hub_repo(repo_id)` replace the code files and the config's `auto_map` /
`custom_pipelines` with the installed plugin's, and leave the weights, the tokenizer's data, the generation config and
every other file as they are. On the Hub that is one commit (or a pull request). The command line is `vaswani-refresh-checkpoint`.

This module is part of the plugin; it is not copied into checkpoints.
"""

import json
import tempfile
from pathlib import Path

from vaswani.configuration.configuration_vaswani import VaswaniConfig
from vaswani.modeling.checkpoint_vaswani import checkpoint_code_files, translation_pipelines
from vaswani.modeling.modeling_vaswani import VaswaniPreTrainedModel
from vaswani.tokenization import tokenization_vaswani

COMMIT_MESSAGE = "Refresh the vaswani code files (works with transformers 5.24 and newer)"


def refreshed_config(config: dict, source: str) -> dict:
    """config.json with the installed plugin's `auto_map` and `custom_pipelines`; refuses another model type."""
    if config.get("model_type") != VaswaniConfig.model_type:
        raise ValueError(
            f"{source} is not a vaswani checkpoint: its config.json says model_type={config.get('model_type')!r}."
        )
    return {
        **config,
        "auto_map": {**(config.get("auto_map") or {}), **VaswaniPreTrainedModel._auto_map},
        "custom_pipelines": translation_pipelines(),
    }


def code_files(present: set[str]) -> list[Path]:
    """The model's code files, plus the tokenizer's where the checkpoint carries it (saved by its tokenizer)."""
    tokenizer_file = Path(tokenization_vaswani.__file__)
    return checkpoint_code_files() + ([tokenizer_file] if tokenizer_file.name in present else [])


def refresh_folder(folder: str | Path) -> list[str]:
    """Refreshes the checkpoint `folder` (what `save_pretrained` wrote) in place: the installed plugin's code files
    and config entries (`auto_map`, `custom_pipelines`); weights, tokenizer and other files are left alone. Returns
    the names of the files written. Refuses a folder without config.json or of another model type."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: pass the folder `save_pretrained` wrote.")
    config = refreshed_config(json.loads(config_file.read_text(encoding="utf-8")), str(folder))
    written = []
    for source in code_files({p.name for p in folder.iterdir()}):
        (folder / source.name).write_bytes(source.read_bytes())
        written.append(source.name)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [*written, config_file.name]


def refresh_hub_repo(repo_id: str, *, token: str | None = None, revision: str | None = None, create_pr: bool = False,
                     commit_message: str = COMMIT_MESSAGE) -> str:  # fmt: skip
    """Refreshes the Hub repository `repo_id` as `refresh_folder` does a folder, in one commit.

    `token`: write access (default: the logged-in one); `revision`: the branch to refresh (default: main);
    `create_pr`: open a pull request instead of committing; `commit_message`: the commit's title. Returns the
    commit's URL (or the pull request's)."""
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

    api = HfApi(token=token)
    present = set(api.list_repo_files(repo_id, revision=revision))
    if "config.json" not in present:
        raise FileNotFoundError(f"The Hub repository {repo_id} has no config.json: it holds no saved model.")
    with tempfile.TemporaryDirectory() as work_dir:
        downloaded = hf_hub_download(repo_id, "config.json", revision=revision, token=token, cache_dir=work_dir)
        config = refreshed_config(json.loads(Path(downloaded).read_text(encoding="utf-8")), repo_id)
    operations = [CommitOperationAdd(source.name, str(source)) for source in code_files(present)]
    config_bytes = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")
    operations.append(CommitOperationAdd("config.json", config_bytes))
    commit = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision,
                               create_pr=create_pr)  # fmt: skip
    return commit.pr_url or commit.commit_url
