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


@pytest.fixture
def model():
    return tiny_model()


# The pytest marks of transformers' own model tests (tests/test_transformers_common.py), registered so that running
# them reports no unknown-mark warnings.
TRANSFORMERS_MARKS = ("flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test",
                      "torch_export_test", "generate", "training_ci", "is_flaky", "accelerate_tests")  # fmt: skip


def pytest_configure(config):
    for mark in TRANSFORMERS_MARKS:
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' model tests")
