"""A joint source/target byte-pair vocabulary for the Transformer, built on the `tokenizers` library.

The paper encodes source and target with one shared byte-pair vocabulary (Section 5.1). This tokenizer learns it with
byte-level BPE, so that no character is ever unknown: every string is a sequence of bytes, and
`decode(encode(text)) == text` for any NFC-normalised Unicode text.

This file must import nothing from the `vaswani` package: it is copied flat into every saved tokenizer so that
`AutoTokenizer.from_pretrained(..., trust_remote_code=True)` works where `vaswani` is not installed.
"""

import json
import os
from collections.abc import Iterable, Iterator

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Ids 0..3, matching VaswaniConfig's pad/bos/eos/unk defaults; `<s>` is also the decoder start token.
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# What the post-processor adds around a sequence; the defaults are the translation model's (and every tokenizer saved
# before these options existed): no `<s>` in front, `</s>` at the end.
SEQUENCE_OPTIONS = {"add_bos_token": False, "add_eos_token": True}
DEFAULT_MODEL_MAX_LENGTH = 1024  # VaswaniConfig.max_position_embeddings


def build_backend(vocab_size: int, min_frequency: int, show_progress: bool) -> tuple[Tokenizer, trainers.BpeTrainer]:
    """An untrained byte-level BPE pipeline and its trainer.

    - normalizer: Unicode NFC only. Composed and decomposed forms of a character become one token sequence, and
      nothing else changes: no lower-casing, no accent stripping, no NFKC (which would turn "ﬁ" into "fi" and "²"
      into "2", so that decode(encode(text)) could not return the text).
    - byte-level pre-tokenizer: text is split on word boundaries and mapped to 256 byte symbols, so every
      character (umlauts, 我爱你, emoji) is representable and the vocabulary needs no <unk> at encoding time.
    - post-processor: every sequence ends with </s>, as the model's decoder expects.
    """
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS.values()),  # ids 0, 1, 2, 3 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    return backend, trainer


def append_eos(backend: Tokenizer) -> None:
    """`$A </s>` (pairs `$A </s> $B </s>`): the translation model's template, for its inputs and its labels."""
    eos = SPECIAL_TOKENS["eos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:1 {eos}:1", special_tokens=[(eos, backend.token_to_id(eos))]
    )


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class VaswaniTokenizer(PreTrainedTokenizerFast):
    """Fast tokenizer for [`VaswaniForConditionalGeneration`]: joint byte-level BPE, `</s>` ending each sequence.

    Use it like any Hugging Face tokenizer: `tok(src, text_target=tgt)` gives `input_ids`, `attention_mask` and
    `labels`; `model.generate(**tok(src, return_tensors="pt"))` works as is. Train a new vocabulary with
    [`VaswaniTokenizer.train`] or `vaswani-train-tokenizer` (`scripts/train_tokenizer.py`); `save_pretrained` and
    `AutoTokenizer.from_pretrained` (or `trust_remote_code=True` without the plugin) store and load it.

    - Special tokens: `<pad>` 0, `<s>` 1 (the decoder start), `</s>` 2 (appended to every sequence), `<unk>` 3,
      the ids of `VaswaniConfig`. A literal "</s>" typed in the text stays text.
    - `add_eos_token` (default True) and `add_bos_token` (default False), as in Llama's tokenizer: pass
      `add_eos_token=False` to `from_pretrained` (or set the attribute) for causal-LM prompts that must not end in
      `</s>`, `add_bos_token=True` to start every sequence with `<s>`; `save_pretrained` keeps both in
      tokenizer_config.json. `text_target` labels always end in `</s>` and never start with `<s>`, whatever the two say.
    - Mask token, for masked-LM pretraining and `pipeline("fill-mask")`: `tokenizer.add_special_tokens({"mask_token":
      "<mask>"})` gives `<mask>` the next free id (`len(tokenizer)` before; every other id unchanged). A "<mask>" typed
      in the text is that one token (taking the space before it, as RoBERTa's does), unlike a typed "</s>", and
      `skip_special_tokens=True` drops it.
    - Normalisation is Unicode NFC only, and byte-level BPE leaves no character unknown, so
      `decode(encode(text), skip_special_tokens=True) == text` for any NFC text (umlauts, 我爱你, emoji, runs of
      whitespace).
    - Nothing is truncated unless `truncation=True` is passed (then at `model_max_length`, 1024 by default).
    """

    vocab_files_names = {"tokenizer_file": TOKENIZER_FILE}
    model_input_names = ["input_ids", "attention_mask"]  # exactly what the model's forward takes
    padding_side = "right"

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 8000,
        min_frequency: int = 2,
        model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
        show_progress: bool = True,
        length: int | None = None,
    ) -> "VaswaniTokenizer":
        """Learns a joint BPE vocabulary from an iterator of texts (source and target sentences together).

        Args:
            texts: any iterable of strings, e.g. `chain(sources, targets)`.
            vocab_size: the vocabulary size including the 4 special tokens and the 256 byte symbols.
            min_frequency: pairs seen fewer times are not merged.
            model_max_length: the longest sequence (in tokens) the tokenizer lets through when truncating.
            show_progress: show the `tokenizers` progress bar.
            length: the number of texts, if known, for the progress bar.
        """
        minimum = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
        if vocab_size < minimum:
            raise ValueError(
                f"`vocab_size` must be at least {minimum} (4 special tokens + 256 bytes), got {vocab_size}."
            )
        backend, trainer = build_backend(vocab_size, min_frequency, show_progress)
        backend.train_from_iterator(_batches(texts), trainer=trainer, length=length)
        append_eos(backend)
        # split_special_tokens: a literal "</s>" in user text is text, not a control token, so it survives the
        # round trip and cannot end a sequence early.
        return cls(
            tokenizer_object=backend,
            model_max_length=model_max_length,
            clean_up_tokenization_spaces=False,
            split_special_tokens=True,
            **SPECIAL_TOKENS,
            **SEQUENCE_OPTIONS,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedTokenizerFast.from_pretrained`, with a clear error when a local folder's vocabulary file is
        missing or corrupt (instead of a parser message that names no file)."""
        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder):
            check_tokenizer_file(os.path.join(folder, TOKENIZER_FILE))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def _from_pretrained(cls, resolved_vocab_files, *args, **kwargs):
        """Passes `add_bos_token` / `add_eos_token` to `__init__` always: from the keyword arguments, else from
        tokenizer_config.json (see `_save_pretrained`; transformers 5 drops them from the config it loads), else the
        defaults, which a folder saved before these options existed gets: its `</s>`-appending template, rebuilt.

        (Not an `__init__` argument default: a class that defines `__init__` gets its backend rebuilt from bare
        vocab/merges by transformers 5, without the NFC normalizer and byte-level pre-tokenizer.)"""
        config_file = resolved_vocab_files.get("tokenizer_config_file")
        saved = {}
        if config_file is not None:
            with open(config_file, encoding="utf-8") as handle:
                saved = json.load(handle)
        for key, default in SEQUENCE_OPTIONS.items():
            kwargs.setdefault(key, saved.get(key, default))
        return super()._from_pretrained(resolved_vocab_files, *args, **kwargs)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        """Writes the current `add_bos_token` / `add_eos_token` (attributes set after loading included) into
        tokenizer_config.json, which transformers 5 saves without them; this runs before any upload to the Hub."""
        config_file = os.path.join(
            str(save_directory), (filename_prefix + "-" if filename_prefix else "") + TOKENIZER_CONFIG_FILE
        )
        with open(config_file, encoding="utf-8") as handle:
            config = json.load(handle)
        config.update({key: getattr(self, key) for key in SEQUENCE_OPTIONS})
        with open(config_file, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)

    def _switch_to_target_mode(self):
        """`text_target` labels are the translation model's decoder targets: `</s>` ends them (it is how the model
        learns to stop) and `<s>` is not theirs (the decoder start is prepended when labels are shifted)."""
        append_eos(self._tokenizer)

    def _switch_to_input_mode(self):
        self.update_post_processor()

    def _add_tokens(self, new_tokens, special_tokens=False) -> int:
        """Adds the mask token to the backend as a *non-special* added token, every other token as transformers does.

        `split_special_tokens=True` makes the backend treat every special token in the text as text, so that a typed
        "</s>" cannot end a sequence; the fill-mask pipeline and masked-LM data need a typed "<mask>" to be the mask
        token. A non-special added token is always matched, and transformers still counts `<mask>` as special
        (`all_special_ids`, `get_special_tokens_mask`, and `_decode` below for `skip_special_tokens`)."""
        mask = self._special_tokens_map.get("mask_token")
        if mask is None or str(mask) not in map(str, new_tokens):
            return super()._add_tokens(new_tokens, special_tokens=special_tokens)
        rest = [token for token in new_tokens if str(token) != str(mask)]
        added = self._tokenizer.add_tokens([mask_added_token(mask)])
        return added + (super()._add_tokens(rest, special_tokens=special_tokens) if rest else 0)

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        """The backend skips only its own special tokens, which `<mask>` is not (see `_add_tokens`)."""
        if skip_special_tokens and not isinstance(token_ids, dict):
            special = set(self.all_special_ids)
            token_ids = [
                index for index in ([token_ids] if isinstance(token_ids, int) else token_ids) if index not in special
            ]
        return super()._decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)


def mask_added_token(mask: str | AddedToken) -> AddedToken:
    """The mask token as an added token that `encode_special_tokens` does not split, taking the space before it.

    `lstrip` as in RoBERTa's `<mask>`: byte-level BPE puts a word's leading space in the word's token ("Ġword"), which
    is what masked-LM training replaces with the mask; "a <mask> b" then gives `a <mask> Ġb`, not `a Ġ <mask> Ġb`."""
    if isinstance(mask, str):
        return AddedToken(mask, lstrip=True, normalized=False, special=False)
    return AddedToken(mask.content, single_word=mask.single_word, lstrip=True, rstrip=mask.rstrip,
                      normalized=mask.normalized, special=False)  # fmt: skip


def check_tokenizer_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Vocabulary file {path} not found. A VaswaniTokenizer folder holds tokenizer.json, written by "
            "`tokenizer.save_pretrained(folder)`; train one with `VaswaniTokenizer.train(...)` or "
            "`python -m vaswani.scripts.train_tokenizer`."
        )
    try:
        Tokenizer.from_file(path)  # one parse: malformed JSON and invalid tokenizer content both raise here
    except Exception as error:  # tokenizers raises a plain Exception for every parse error
        raise ValueError(
            f"Vocabulary file {path} is corrupt ({error}). Re-save the tokenizer or train it again."
        ) from error


VaswaniTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = ["SPECIAL_TOKENS", "VaswaniTokenizer"]
