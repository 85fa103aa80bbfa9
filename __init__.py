"""vaswani: the Transformer of "Attention Is All You Need" (Vaswani et al., 2017) as a Hugging Face model plugin.

`import vaswani` registers the model with the Auto classes, so that afterwards only transformers' own API is needed:
`AutoConfig.for_model("vaswani")`, `AutoModelForSeq2SeqLM.from_config(...)`, `from_pretrained`, `generate`, Trainer.
"""


def _check_transformers_version() -> None:
    """Outside the supported window (pyproject.toml) vaswani may decode wrongly without an error (transformers 5.24
    renamed the cache): refuse an older release at import, and log a warning for a newer one, which is untested."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        window = next(
            r.specifier for r in map(Requirement, metadata.requires("vaswani") or ()) if r.name == "transformers"
        )
        installed = metadata.version("transformers")
    except (metadata.PackageNotFoundError, StopIteration):  # run from a source tree that is not installed
        return
    if window.contains(installed, prereleases=True):
        return
    stated = ",".join(sorted(map(str, window), key=lambda bound: not bound.startswith(">")))  # ">=5.23,<5.26"
    upper = [Version(bound.version) for bound in window if bound.operator in ("<", "<=")]
    if upper and Version(installed) >= max(upper):
        import logging

        logging.getLogger(__name__).warning(
            "transformers %s is newer than the releases vaswani is tested with (%s); "
            "vaswani.modeling.compat_vaswani.check_cached_decoding(model, input_ids) tells whether decoding works.",
            installed, stated,
        )  # fmt: skip
        return
    raise ImportError(
        f"vaswani needs transformers{stated}, but transformers {installed} is installed. "
        f"Upgrade it: pip install 'transformers{stated}'."
    )


_check_transformers_version()

from transformers import (  # noqa: E402
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

# Absolute imports on purpose: pytest imports this file once more under the checkout's folder name (the repository
# root is the package), and absolute imports make that second import reuse the same classes.
from vaswani.configuration import PRESETS, VaswaniConfig  # noqa: E402
from vaswani.modeling import (  # noqa: E402
    VaswaniDecoderModel,
    VaswaniEncoderModel,
    VaswaniForCausalLM,
    VaswaniForConditionalGeneration,
    VaswaniForMaskedLM,
    VaswaniForSequenceClassification,
    VaswaniForTokenClassification,
    VaswaniModel,
    VaswaniPreTrainedModel,
    VaswaniTranslationPipeline,
    paper_generation_config,
    pipeline,
)
from vaswani.modeling.ctranslate2_export import convert_to_ctranslate2  # noqa: E402
from vaswani.modeling.onnx_export import export_onnx  # noqa: E402
from vaswani.modeling.onnxruntime_vaswani import ORTModelForSeq2SeqLM  # noqa: E402
from vaswani.tokenization import VaswaniTokenizer  # noqa: E402

__version__ = "0.5.0"

AutoConfig.register(VaswaniConfig.model_type, VaswaniConfig, exist_ok=True)
AutoModel.register(VaswaniConfig, VaswaniModel, exist_ok=True)
AutoModelForSeq2SeqLM.register(VaswaniConfig, VaswaniForConditionalGeneration, exist_ok=True)
# The same blocks as a GPT-style decoder and a BERT-style encoder (the encoder model itself is `VaswaniEncoderModel`,
# not AutoModel: one config class has one AutoModel, the translation model's).
AutoModelForCausalLM.register(VaswaniConfig, VaswaniForCausalLM, exist_ok=True)
AutoModelForMaskedLM.register(VaswaniConfig, VaswaniForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(VaswaniConfig, VaswaniForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(VaswaniConfig, VaswaniForTokenClassification, exist_ok=True)
AutoTokenizer.register(VaswaniConfig, fast_tokenizer_class=VaswaniTokenizer, exist_ok=True)

__all__ = [
    "ORTModelForSeq2SeqLM",
    "PRESETS",
    "VaswaniConfig",
    "VaswaniDecoderModel",
    "VaswaniEncoderModel",
    "VaswaniForCausalLM",
    "VaswaniForConditionalGeneration",
    "VaswaniForMaskedLM",
    "VaswaniForSequenceClassification",
    "VaswaniForTokenClassification",
    "VaswaniModel",
    "VaswaniPreTrainedModel",
    "VaswaniTokenizer",
    "VaswaniTranslationPipeline",
    "convert_to_ctranslate2",
    "export_onnx",
    "paper_generation_config",
    "pipeline",
]
