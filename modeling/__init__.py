from .modeling_vaswani import (
    VaswaniForConditionalGeneration,
    VaswaniModel,
    VaswaniPreTrainedModel,
    scaled_dot_product_attention,
    sinusoid_table,
)

__all__ = [
    "VaswaniForConditionalGeneration",
    "VaswaniModel",
    "VaswaniPreTrainedModel",
    "scaled_dot_product_attention",
    "sinusoid_table",
]
