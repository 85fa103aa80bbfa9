from .modeling_vaswani import (
    VaswaniDecoderModel,
    VaswaniEncoderModel,
    VaswaniForCausalLM,
    VaswaniForConditionalGeneration,
    VaswaniForMaskedLM,
    VaswaniForSequenceClassification,
    VaswaniForTokenClassification,
    VaswaniModel,
    VaswaniPreTrainedModel,
    paper_generation_config,
    scaled_dot_product_attention,
    sinusoid_table,
)
from .pipeline_vaswani import VaswaniTranslationPipeline, pipeline

__all__ = [
    "VaswaniDecoderModel",
    "VaswaniEncoderModel",
    "VaswaniForCausalLM",
    "VaswaniForConditionalGeneration",
    "VaswaniForMaskedLM",
    "VaswaniForSequenceClassification",
    "VaswaniForTokenClassification",
    "VaswaniModel",
    "VaswaniPreTrainedModel",
    "VaswaniTranslationPipeline",
    "paper_generation_config",
    "pipeline",
    "scaled_dot_product_attention",
    "sinusoid_table",
]
