"""The "translation" and "text2text-generation" pipelines for sequence-to-sequence models.

transformers 5 removed both tasks from its own pipelines. This file is saved into every vaswani checkpoint and named in
the config's `custom_pipelines`, so that

    pipeline("translation", model="me/vaswani-en-de", trust_remote_code=True)("The house is small.")

works for a Hub repository or a local folder. With the plugin installed, `vaswani.pipeline(...)` gives the same object
without remote code. The outputs are those of transformers 4: `[{"translation_text": ...}]` for "translation" and
`[{"generated_text": ...}]` for "text2text-generation", one dict per returned sequence.

The file imports only transformers and torch: it runs where vaswani is not installed.
"""

import os

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, Pipeline, PreTrainedModel

TASK_OUTPUT_KEYS = {"translation": "translation_text", "text2text-generation": "generated_text"}


class VaswaniTranslationPipeline(Pipeline):
    """Tokenize, `model.generate()`, decode. Generation parameters (`num_beams`, `max_new_tokens`, ...) can be passed
    at construction or per call; by default the model's generation config applies (in the training job's checkpoints,
    the paper's beam 4 and length penalty 0.6; output length up to input + 50).

    Built by `pipeline("translation", model=..., trust_remote_code=True)` or `vaswani.pipeline(...)`; the
    constructor's keyword arguments are those of transformers' `Pipeline` (`model`, `tokenizer`, `task`, `device`,
    ...). A model that is not encoder-decoder, or a missing tokenizer, raises a ValueError."""

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True
    _pipeline_calls_generate = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.tokenizer is None:
            raise ValueError(f"The {self.task or 'translation'} pipeline needs a tokenizer: pass `tokenizer=`.")
        if not self.model.config.is_encoder_decoder:
            raise ValueError(
                f"The {self.task or 'translation'} pipeline needs an encoder-decoder model; "
                f"{type(self.model).__name__} is not one."
            )

    def _sanitize_parameters(self, return_tensors=None, clean_up_tokenization_spaces=None, **generate_kwargs):
        postprocess = {}
        if return_tensors is not None:
            postprocess["return_tensors"] = return_tensors
        if clean_up_tokenization_spaces is not None:
            postprocess["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return {}, generate_kwargs, postprocess

    def __call__(self, inputs, **kwargs):
        """Translate `inputs`, a string or a list of strings.

        A single string gives a list with one dict per returned sequence (`{"translation_text": ...}`, or
        `{"generated_text": ...}` for "text2text-generation"); a list gives one such list per string. `kwargs` are
        generation parameters (`num_beams`, `max_new_tokens`, `num_return_sequences`, ...) and `return_tensors=True`
        (token ids instead of text). An empty string or a non-string raises before any work; inputs are never
        truncated."""
        if isinstance(inputs, str):
            self._check_text(inputs)
        elif isinstance(inputs, (list, tuple)):
            for text in inputs:
                self._check_text(text)
        else:
            raise TypeError(f"The pipeline takes a string or a list of strings, not {type(inputs).__name__}.")
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _check_text(text) -> None:
        if not isinstance(text, str):
            raise TypeError(f"The pipeline takes strings; got {type(text).__name__}: {text!r}.")
        if not text.strip():
            raise ValueError("The pipeline got an empty string: there is nothing to translate.")

    def preprocess(self, text: str) -> dict[str, torch.Tensor]:
        # No truncation: sinusoidal positions have no length limit, and cutting the input would drop text silently.
        return self.tokenizer(text, return_tensors="pt")

    def _forward(self, model_inputs: dict[str, torch.Tensor], **generate_kwargs) -> dict[str, torch.Tensor]:
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)  # (B * num_return_sequences, T)
        batch_size = model_inputs["input_ids"].shape[0]
        return {"output_ids": output_ids.reshape(batch_size, -1, output_ids.shape[-1])}  # (B, n, T)

    def postprocess(self, model_outputs, return_tensors=False, clean_up_tokenization_spaces=False):
        key = TASK_OUTPUT_KEYS.get(self.task, "translation_text")
        results = []
        for ids in model_outputs["output_ids"][0]:  # the pipeline unbatches: one example, n sequences
            if return_tensors:
                results.append({key.replace("_text", "_token_ids"): ids})
            else:
                text = self.tokenizer.decode(
                    ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up_tokenization_spaces
                )
                results.append({key: text})
        return results


def pipeline(task: str = "translation", model=None, tokenizer=None, *, revision=None, token=None, dtype=None,
             **kwargs):  # fmt: skip
    """The in-process path for installed users, which needs no remote code: `vaswani.pipeline("translation", model)`.

    Args:
        task: "translation" or "text2text-generation" (the same pipeline; only the output key differs).
        model: a model object (PyTorch, or ONNX Runtime's `vaswani.ORTModelForSeq2SeqLM`), a local folder (a
            checkpoint, or an export of `vaswani-export-onnx`, which ONNX Runtime runs) or a Hub id.
        tokenizer: a tokenizer, a folder or a Hub id; defaults to the one saved with `model` when that is a path.
        revision, token: for a Hub id, the branch, tag or commit to load and the access token.
        dtype: the weights' dtype when `model` is a path, as `from_pretrained(..., dtype=...)`: `torch.bfloat16`
            decodes faster on GPUs and on CPUs with bf16 instructions at batch 8 and up (docs/serving.md).
        kwargs: go to the pipeline (`device`, `batch_size`, generation parameters such as `num_beams`).

    Returns a `VaswaniTranslationPipeline`; called on text it returns `[{"translation_text": ...}]`.
    """
    if task not in TASK_OUTPUT_KEYS:
        raise ValueError(f"Unknown task {task!r}: the vaswani pipeline serves {sorted(TASK_OUTPUT_KEYS)}.")
    if model is None:
        raise ValueError("Pass `model=`: a vaswani model, a checkpoint folder or a Hub id such as 'me/vaswani-en-de'.")
    hub = {"revision": revision, "token": token}
    if isinstance(model, (str, os.PathLike)) and is_onnx_export(model):
        if dtype is not None:
            raise ValueError("`dtype` applies to PyTorch weights; an ONNX export keeps the precision it was exported "
                             "with (`vaswani-export-onnx --quantize int8` for int8).")  # fmt: skip
        tokenizer = str(model) if tokenizer is None else tokenizer
        model = onnx_model_class().from_pretrained(model)
    elif isinstance(model, (str, os.PathLike)):
        tokenizer = str(model) if tokenizer is None else tokenizer
        model = AutoModelForSeq2SeqLM.from_pretrained(model, **hub, **({"dtype": dtype} if dtype else {}))
    elif not isinstance(model, PreTrainedModel):
        raise TypeError(f"`model` must be a model, a folder or a Hub id, not {type(model).__name__}.")
    elif dtype is not None and dtype != model.dtype:
        raise ValueError(
            f"`dtype={dtype}` applies to a model loaded from a path; this model object is {model.dtype}. Convert "
            f"it yourself (`model.to({dtype})`) or pass the folder or Hub id."
        )
    if tokenizer is None:
        raise ValueError("Pass `tokenizer=` along with a model object.")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub)
    return VaswaniTranslationPipeline(model=model, tokenizer=tokenizer, task=task, **kwargs)


def is_onnx_export(folder) -> bool:
    """Whether `folder` is a local export of `vaswani-export-onnx` (optimum's layout)."""
    return os.path.isfile(os.path.join(folder, "encoder_model.onnx"))


def onnx_model_class():
    """vaswani's `ORTModelForSeq2SeqLM`: part of the plugin, not of the checkpoint's remote code."""
    try:
        from vaswani.modeling.onnxruntime_vaswani import ORTModelForSeq2SeqLM
    except ImportError as error:
        raise ImportError("Running an ONNX export needs the vaswani plugin: `pip install 'vaswani[serve]'`.") from error
    return ORTModelForSeq2SeqLM
