"""A joint source/target byte-pair vocabulary for the Transformer, built on the `tokenizers` library.

The paper encodes source and target with one shared byte-pair vocabulary (Section 5.1). This tokenizer learns it with
byte-level BPE, so that no character is ever unknown: every string is a sequence of bytes, and
`decode(encode(text)) == text` for any NFC-normalised Unicode text.

This file must import nothing from the `vaswani` package: it is copied flat into every saved tokenizer so that
`AutoTokenizer.from_pretrained(..., trust_remote_code=True)` works where `vaswani` is not installed.
"""

import os
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Ids 0..3, matching VaswaniConfig's pad/bos/eos/unk defaults; `<s>` is also the decoder start token.
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
TOKENIZER_FILE = "tokenizer.json"
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
    """Fast tokenizer for [`VaswaniForConditionalGeneration`]: joint byte-level BPE, `</s>` after every sequence.

    Use it like any Hugging Face tokenizer: `tok(src, text_target=tgt)` gives `input_ids`, `attention_mask` and
    `labels`; `model.generate(**tok(src, return_tensors="pt"))` works as is. Train a new vocabulary with
    [`VaswaniTokenizer.train`] or `vaswani-train-tokenizer` (`scripts/train_tokenizer.py`); `save_pretrained` and
    `AutoTokenizer.from_pretrained` (or `trust_remote_code=True` without the plugin) store and load it.

    - Special tokens: `<pad>` 0, `<s>` 1 (the decoder start), `</s>` 2 (appended to every sequence), `<unk>` 3,
      the ids of `VaswaniConfig`. A literal "</s>" typed in the text stays text.
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
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedTokenizerFast.from_pretrained`, with a clear error when a local folder's vocabulary file is
        missing or corrupt (instead of a parser message that names no file)."""
        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder):
            check_tokenizer_file(os.path.join(folder, TOKENIZER_FILE))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


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
