"""vaswani: the Transformer of "Attention Is All You Need" (Vaswani et al., 2017) as a Hugging Face model plugin.

`import vaswani` registers the model with the Auto classes, so that afterwards only transformers' own API is needed:
`AutoConfig.for_model("vaswani")`, `AutoModelForSeq2SeqLM.from_config(...)`, `from_pretrained`, `generate`, Trainer.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

# Absolute imports on purpose: pytest imports this file once more under the checkout's folder name (the repository
# root is the package), and absolute imports make that second import reuse the same classes.
from vaswani.configuration import PRESETS, VaswaniConfig
from vaswani.modeling import (
    VaswaniForConditionalGeneration,
    VaswaniModel,
    VaswaniPreTrainedModel,
    VaswaniTranslationPipeline,
    pipeline,
)
from vaswani.tokenization import VaswaniTokenizer

__version__ = "0.1.0"

AutoConfig.register(VaswaniConfig.model_type, VaswaniConfig, exist_ok=True)
AutoModel.register(VaswaniConfig, VaswaniModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(VaswaniConfig, VaswaniForConditionalGeneration, exist_ok=True)
AutoTokenizer.register(VaswaniConfig, fast_tokenizer_class=VaswaniTokenizer, exist_ok=True)

__all__ = [
    "PRESETS",
    "VaswaniConfig",
    "VaswaniForConditionalGeneration",
    "VaswaniModel",
    "VaswaniPreTrainedModel",
    "VaswaniTokenizer",
    "VaswaniTranslationPipeline",
    "pipeline",
]
