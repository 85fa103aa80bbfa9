"""Give a saved vaswani checkpoint, a folder or a Hub repository, the code of the installed plugin.

vaswani-refresh-checkpoint runs/en-de/model              # a folder, in place; then checked in a fresh process
vaswani-refresh-checkpoint me/vaswani-en-de              # a Hub repository, in one commit
vaswani-refresh-checkpoint me/vaswani-en-de --create-pr  # ... as a pull request

Checkpoints saved by vaswani 0.1.0 carry code that, loaded with `trust_remote_code=True` under transformers 5.24 or
newer, decodes without its cache and translates wrongly (without an error). This replaces the code files and the
config's `auto_map` and `custom_pipelines`; weights, tokenizer data and all other files stay as they are. A refreshed
folder is then loaded as remote code in a fresh process without the plugin, and its cached decoding is checked.
The Hub token comes from `hf auth login` or `HF_TOKEN`; `HF_ENDPOINT` selects another Hub.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from huggingface_hub.errors import HfHubHTTPError

from vaswani.modeling.refresh import COMMIT_MESSAGE, refresh_folder, refresh_hub_repo

CHECK = textwrap.dedent(
    """
    import sys
    sys.modules["vaswani"] = None  # as where the plugin is not installed: the checkpoint's own code must do it all
    import torch
    from transformers import AutoModelForSeq2SeqLM
    model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    compat = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".compat_vaswani"]
    ids = torch.randint(4, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    print(compat.check_cached_decoding(model, ids, max_new_tokens=12))
    """
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="a checkpoint folder, or a Hub repository id 'namespace/name'")
    hub = p.add_argument_group("Hub repositories")
    hub.add_argument("--revision", help="the branch to refresh (default: main)")
    hub.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    hub.add_argument("--commit-message", default=COMMIT_MESSAGE)
    hub.add_argument("--token", help="a Hub token (default: the logged-in one or HF_TOKEN)")
    return p.parse_args(argv)


def check_remote_code(folder: Path) -> float:
    """Loads `folder` with trust_remote_code in a fresh process where vaswani cannot be imported, and runs the
    checkpoint's own `check_cached_decoding`. Returns the largest log-probability difference."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HOME=home, HF_HUB_OFFLINE="1")
        result = subprocess.run([sys.executable, "-c", CHECK, str(folder.resolve())], cwd=home, env=env,
                                capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"error: {folder} was refreshed, but its code fails as remote code:\n{result.stderr[-3000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = Path(args.target)
    try:
        if folder.is_dir():
            if args.revision or args.create_pr or args.token:
                raise SystemExit(
                    f"error: --revision, --create-pr and --token apply to Hub repositories; {folder} is a folder"
                )
            written = refresh_folder(folder)
            print(f"Refreshed {folder}: {', '.join(written)}")
            difference = check_remote_code(folder)
            print(f"Checked: loaded as remote code without the plugin, cached and uncached decoding agree "
                  f"(largest log-probability difference {difference:.1e}).")  # fmt: skip
            return
        if args.target.count("/") != 1:
            raise SystemExit(f"error: {args.target!r} is neither a folder here nor a Hub repository 'namespace/name'")
        url = refresh_hub_repo(args.target, token=args.token, revision=args.revision, create_pr=args.create_pr,
                               commit_message=args.commit_message)  # fmt: skip
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    except HfHubHTTPError as error:
        raise SystemExit(f"error: the Hub refused to refresh {args.target}: {error}") from error
    print(f"Refreshed {args.target}: {url}")


if __name__ == "__main__":
    main()
