"""Fetch transformers' own model tests for the installed transformers, for tests/test_transformers_common.py.

transformers publishes its generic model tests (`tests/test_modeling_common.py` with `ModelTesterMixin`,
`tests/test_configuration_common.py` with `ConfigTester`) in its source distribution, not in its wheel. This script
downloads the sdist of exactly the installed release from the package registry (`pip download --no-deps
--no-binary :all:`), and extracts those two files into `.ci/transformers-tests/<version>/transformers_tests/`
(ignored by git: they are transformers' code, fetched per environment, never committed). What the two files import
and the sdist does not hold (the generation and export mixins, a dict of config keywords) gets an empty stand-in,
each saying so; tests/test_transformers_common.py skips, with the reason, the tests that would need them.

Run by scripts/setup_env.sh and .ci/lane.sh; by hand:

    .venv/bin/python scripts/fetch_transformers_tests.py

Without a registry it says so and exits 0: the test module then skips itself with the reason.
"""

import argparse
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESTINATION = ROOT / ".ci" / "transformers-tests"
PACKAGE = "transformers_tests"  # not "tests": that would be the checkout's own tests/ folder on sys.path
FILES = ("tests/test_modeling_common.py", "tests/test_configuration_common.py")
# What those files import with relative imports and the sdist does not carry: module -> its stand-in.
STAND_INS = {
    "exporters/test_export.py": (
        "class ExportTesterMixin:\n"
        '    """Not in the sdist (tests/exporters/): no export tests; tests/test_versions.py exports vaswani."""\n'
    ),
    "generation/test_utils.py": (
        "class GenerationTesterMixin:\n"
        '    """Not in the sdist (tests/generation/): vaswani\'s own tests/test_generation.py covers generation."""\n'
    ),
    "utils/test_configuration_utils.py": (
        "# Not in the sdist (tests/utils/): ConfigTester.check_config_arguments_init, which reads it, is skipped.\n"
        "config_common_kwargs = {}\n"
    ),
}


def suite_folder(version: str) -> Path:
    """Where the tests of transformers `version` are extracted: its folder goes on sys.path."""
    return DESTINATION / version


def download_sdist(version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--no-binary", ":all:", "--dest", str(into), f"transformers=={version}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(into.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or not archives:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no sdist")
    return archives[0]


def extract(archive: Path, folder: Path) -> None:
    package = folder / PACKAGE
    with tarfile.open(archive) as tar:
        members = {member.name.split("/", 1)[-1]: member for member in tar.getmembers()}
        for name in FILES:
            member = members.get(name)
            if member is None:
                raise RuntimeError(f"{archive.name} has no {name}")
            target = package / Path(name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    for name, text in STAND_INS.items():
        target = package / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for directory in [package, *{(package / name).parent for name in STAND_INS}]:
        (directory / "__init__.py").touch()
    (folder / "SOURCE").write_text(f"{archive.name}: {', '.join(FILES)}\n")


def fetch(version: str, force: bool = False) -> Path:
    """Extracts the tests of transformers `version` (once; again with `force`) and returns their folder."""
    folder = suite_folder(version)
    if (folder / "SOURCE").exists() and not force:
        return folder
    with tempfile.TemporaryDirectory() as download:
        archive = download_sdist(version, Path(download))
        DESTINATION.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=DESTINATION))
        extract(archive, staging)
        if folder.exists():
            for path in sorted(folder.rglob("*"), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            folder.rmdir()
        staging.rename(folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", help="the transformers release (default: the installed one)")
    parser.add_argument("--force", action="store_true", help="download again even if already extracted")
    args = parser.parse_args(argv)
    version = args.version or metadata.version("transformers")
    try:
        folder = fetch(version, args.force)
    except (RuntimeError, OSError, tarfile.TarError) as error:
        print(f"transformers {version}'s own model tests were not fetched ({error}); "
              "tests/test_transformers_common.py will skip them.")  # fmt: skip
        return
    print(f"transformers {version}'s own model tests: {folder.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
