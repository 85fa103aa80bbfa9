from .tokenization_vaswani import SPECIAL_TOKENS, VaswaniTokenizer

__all__ = ["SPECIAL_TOKENS", "VaswaniTokenizer"]
