import logging

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM

import vaswani


def tiny_config(**overrides) -> vaswani.VaswaniConfig:
    """The `tiny` preset: seconds per test on a 2-core CPU."""
    return vaswani.VaswaniConfig.from_preset("tiny", **overrides)


def tiny_model(attn_implementation: str = "eager", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = tiny_config(**overrides)
    return AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attn_implementation).eval()


def random_batch(batch_size: int = 3, length: int = 9, vocab_size: int = 128, seed: int = 0):
    """Right-padded token ids (no special tokens inside) and their mask; row i has length - 2*i real tokens."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for i in range(batch_size):
        real = max(1, length - 2 * i)
        input_ids[i, real:] = 0
        attention_mask[i, real:] = 0
    return input_ids, attention_mask


def learn_pairs(pairs: list[tuple[str, str]], folder, **overrides):
    """A tiny model (SDPA, no dropout, `overrides` on the config) that has learned `pairs` by heart (150 Adam steps,
    seed 0), saved with its tokenizer into `folder`: outputs that are real tokens and end. Returns the model (in
    eval mode) and the tokenizer."""
    tokenizer = vaswani.VaswaniTokenizer.train([t for pair in pairs for t in pair] * 8, vocab_size=300,
                                               show_progress=False)  # fmt: skip
    torch.manual_seed(0)
    config = vaswani.VaswaniConfig.from_preset("tiny", vocab_size=len(tokenizer), dropout=0.0, **overrides)
    model = AutoModelForSeq2SeqLM.from_config(config, attn_implementation="sdpa")
    batch = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs], return_tensors="pt", padding=True)
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100  # no loss on padding
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture(autouse=True)
def transformers_log_level_restored():
    """Console scripts run in-process (benchmark, serving-quality) quiet transformers' logger for their command
    line; each test starts from the session's level, so that a later test sees transformers' warnings (its own
    model tests read the "Reinit due to size mismatch" report)."""
    logger = logging.getLogger("transformers")
    level = logger.level
    yield
    logger.setLevel(level)


# The pytest marks of transformers' own model tests (tests/test_transformers_common.py), registered so that running
# them reports no unknown-mark warnings.
TRANSFORMERS_MARKS = ("flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test",
                      "torch_export_test", "generate", "training_ci", "is_flaky", "accelerate_tests")  # fmt: skip


def pytest_configure(config):
    for mark in TRANSFORMERS_MARKS:
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' model tests")
