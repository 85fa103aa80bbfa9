"""Push a trained checkpoint to the Hugging Face Hub in one commit: model, tokenizer, generation config, the code that
`trust_remote_code=True` runs, and a model card with the scores of its eval_results.json.

python -m vaswani.scripts.push_to_hub runs/en-de/model me/vaswani-en-de
vaswani-push-to-hub runs/en-de/model me/vaswani-en-de --private --license cc0-1.0

The token comes from `hf auth login` or `HF_TOKEN`; `HF_ENDPOINT` selects another Hub.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import vaswani  # noqa: F401  (registers the Auto classes)
from vaswani.modeling.model_card import model_card
from vaswani.scripts import recipe

EXTRA_FILES = ("eval_results.json", "curves.png")  # uploaded with the model when the checkpoint folder has them


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a folder with the model and its tokenizer (e.g. runs/en-de/model)")
    p.add_argument("repo_id", help="the Hub repository, 'namespace/name'")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="the branch to push to (default: main)")
    p.add_argument("--license", default="apache-2.0", help="the card's license field (default: apache-2.0)")
    p.add_argument("--dataset", action="append", help="the card's `datasets` (default: from eval_results.json)")
    p.add_argument("--commit-message", default="Upload vaswani translation model")
    p.add_argument("--token", help="a Hub token (default: the logged-in one or HF_TOKEN)")
    return p.parse_args(argv)


def check_checkpoint(folder: Path) -> dict:
    """Fails before any upload: the folder must hold a model and a tokenizer; eval_results.json is optional."""
    if not folder.is_dir():
        raise SystemExit(f"error: {folder} is not a folder; pass the checkpoint folder, e.g. runs/en-de/model")
    missing = [name for name in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / name).exists()]
    if missing:
        raise SystemExit(f"error: {folder} lacks {', '.join(missing)}: save the model and its tokenizer there first")
    results_file = folder / "eval_results.json"
    return json.loads(results_file.read_text(encoding="utf-8")) if results_file.exists() else {}


def run(argv: list[str] | None = None) -> str:
    """The command with arguments `argv` (default: sys.argv); returns the commit's id."""
    args = parse_args(argv)
    if args.repo_id.count("/") != 1:
        raise SystemExit(f"error: repo_id must be 'namespace/name', got {args.repo_id!r}")
    results = check_checkpoint(args.checkpoint)
    model = AutoModelForSeq2SeqLM.from_pretrained(args.checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    curves = "curves.png" if (args.checkpoint / "curves.png").exists() else None
    card = model_card(model, args.repo_id, results, license=args.license, datasets=args.dataset, curves=curves)
    api = HfApi(token=args.token)
    try:
        repo_id = api.create_repo(args.repo_id, private=args.private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            # Saved afresh, so the repository gets the current code files, auto_map and custom_pipelines.
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            card.save(Path(folder) / "README.md")
            for name in EXTRA_FILES:
                if (args.checkpoint / name).exists():
                    shutil.copyfile(args.checkpoint / name, Path(folder) / name)
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=args.revision,
                                       commit_message=args.commit_message)  # fmt: skip
    except HfHubHTTPError as error:
        raise SystemExit(f"error: the Hub refused the upload to {args.repo_id}: {error}") from error
    print(f"Pushed {args.checkpoint} to {commit.repo_url} (commit {commit.oid[:10]})")
    return commit.oid


def main(argv: list[str] | None = None) -> None:
    """The console script: `run`, with exit status 0 on success (a returned value would become status 1)."""
    recipe.command_line_logging()
    run(argv)


if __name__ == "__main__":
    main()
