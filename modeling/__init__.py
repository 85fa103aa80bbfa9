from .modeling_vaswani import (
    VaswaniForConditionalGeneration,
    VaswaniModel,
    VaswaniPreTrainedModel,
    scaled_dot_product_attention,
    sinusoid_table,
)
from .pipeline_vaswani import VaswaniTranslationPipeline, pipeline

__all__ = [
    "VaswaniForConditionalGeneration",
    "VaswaniModel",
    "VaswaniPreTrainedModel",
    "VaswaniTranslationPipeline",
    "pipeline",
    "scaled_dot_product_attention",
    "sinusoid_table",
]
