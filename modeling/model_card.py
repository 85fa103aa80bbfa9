"""The model card (README.md on the Hub) of a vaswani checkpoint, built with huggingface_hub's card tooling.

`model_card(model, repo_id, results)` fills the metadata (library, pipeline tag, languages, datasets, metrics,
license, model-index with the scores) and a Jinja template with the architecture, the training data and recipe, the
evaluation scores when known, and usage for both loading paths (plugin installed, or `trust_remote_code=True`).
`results` is the `eval_results.json` that `vaswani-train-translation` writes next to the checkpoint.
"""

import re

from huggingface_hub import EvalResult, ModelCard, ModelCardData

CARD_TAG = "vaswani"  # a card carrying this tag was made here; `push_to_hub` keeps it instead of writing a new one

# The architecture table and the named deviations: the same in both cards.
ARCHITECTURE = """| | |
|---|---|
{% for name, value in architecture %}| {{ name }} | {{ value }} |
{% endfor %}
{% if deviations %}Deviations from the paper, as named config options: {{ deviations }}.
{% else %}No deviation from the paper's architecture is switched on.
{% endif %}"""

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## Architecture

The encoder-decoder Transformer of Vaswani et al. (2017), "Attention Is All You Need", as implemented by
[vaswani](https://pypi.org/project/vaswani/): post-LN residual blocks, sinusoidal positions, embeddings scaled by
sqrt(d_model) and shared between encoder, decoder and output projection (Sections 3.1-3.5).

""" + ARCHITECTURE + """
## Training

{% if training %}| | |
|---|---|
{% for name, value in training %}| {{ name }} | {{ value }} |
{% endfor %}{% else %}Not recorded with this upload.
{% endif %}
## Evaluation

{% if scores %}| test set | sentences | BLEU | chrF |
|---|---|---|---|
| {{ scores.corpus }} | {{ scores.sentences }} | {{ scores.bleu }} | {{ scores.chrf }} |

sacreBLEU signatures: `{{ scores.bleu_signature }}`, `{{ scores.chrf_signature }}`.
Decoding: beam {{ scores.beam }}, length penalty {{ scores.length_penalty }}, output length up to input + 50 tokens.
{% if examples %}
| source | reference | translation |
|---|---|---|
{% for e in examples %}| {{ e.source }} | {{ e.reference }} | {{ e.translation }} |
{% endfor %}{% endif %}{% else %}No scores recorded with this upload.
{% endif %}{% if curves %}
![training curves]({{ curves }})
{% endif %}
## Usage

With the plugin installed (`pip install vaswani`), only the standard API is needed:

```python
import vaswani  # registers the model with the Auto classes
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}")
model = AutoModelForSeq2SeqLM.from_pretrained("{{ repo_id }}")
inputs = tokenizer([{{ example | tojson }}], return_tensors="pt")
print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))

translator = vaswani.pipeline("translation", "{{ repo_id }}")
print(translator({{ example | tojson }}))
```

Without the plugin, the code saved in this repository runs with `trust_remote_code=True`:

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

model = AutoModelForSeq2SeqLM.from_pretrained("{{ repo_id }}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}", trust_remote_code=True)
translator = pipeline("translation", model="{{ repo_id }}", trust_remote_code=True)
print(translator({{ example | tojson }}))  # [{"translation_text": ...}]
```

Loading without either fails with transformers' request to pass `trust_remote_code=True`.
{{ decoding }}
"""


def language_code(name: str | None) -> str | None:
    """'en' or 'de-CH' stay; 'en-kjv' (a corpus alias) gives 'en'; a one-letter corpus code gives None."""
    if not name:
        return None
    match = re.fullmatch(r"([a-z]{2,3})(?:[-_][A-Za-z0-9]+)?", name)
    return match.group(1) if match else None


def architecture_rows(model) -> list[tuple[str, str]]:
    c = model.config
    return [
        ("d_model", c.d_model),
        ("layers (encoder + decoder)", f"{c.encoder_layers} + {c.decoder_layers}"),
        ("attention heads", c.encoder_attention_heads),
        ("d_ff", c.encoder_ffn_dim),
        ("activation", c.activation_function),
        ("dropout", c.dropout),
        ("vocabulary", c.vocab_size),
        ("parameters", f"{model.num_parameters():,}"),
    ]


def deviations(config) -> str:
    named = []
    if config.pre_layer_norm:
        named.append("`pre_layer_norm=True`")
    if config.position_embedding_type != "sinusoidal":
        named.append(f"`position_embedding_type={config.position_embedding_type!r}`")
    if config.activation_function != "relu":
        named.append(f"`activation_function={config.activation_function!r}`")
    if not config.tie_word_embeddings:
        named.append("`tie_word_embeddings=False`")
    if not config.scale_embedding:
        named.append("`scale_embedding=False`")
    return ", ".join(named)


def training_rows(results: dict) -> list[tuple[str, str]]:
    rows = [("corpus", results.get("corpus")), ("steps", results.get("steps")),
            ("training time (minutes)", results.get("train_minutes")),
            ("checkpoints averaged", len(results.get("averaged_checkpoints") or []) or None)]  # fmt: skip
    recipe = results.get("recipe") or {}
    rows += [
        ("tokens per batch and side", recipe.get("max_tokens_per_side")),
        ("optimizer", "Adam, betas {}, eps {}".format(recipe["adam_betas"], recipe["adam_epsilon"])
         if "adam_betas" in recipe else None),
        ("learning rate", "inverse square root (Section 5.3), {} warmup steps, peak {:.2e}".format(
            recipe["warmup_steps"], recipe["peak_learning_rate"]) if "warmup_steps" in recipe else None),
        ("label smoothing", recipe.get("label_smoothing")),
        ("dropout", recipe.get("dropout")),
        ("precision", ("bf16 autocast" if recipe["bf16"] else "fp32") if "bf16" in recipe else None),
        ("fine-tuned from", results.get("fine_tuned_from")),
        ("tokenizer", f"byte-level BPE, {recipe['vocab_size']} tokens" if "vocab_size" in recipe else None),
    ]  # fmt: skip
    return [(name, value) for name, value in rows if value is not None]


def model_card(
    model,
    repo_id: str,
    results: dict | None = None,
    *,
    license: str = "apache-2.0",
    datasets: list[str] | None = None,
    curves: str | None = None,
) -> ModelCard:
    """The card for `model` as `repo_id`; `results` (eval_results.json) adds scores, languages and the recipe. An
    encoder-only or decoder-only model gets the card of its shape (`shape_card`)."""
    if not model.config.is_encoder_decoder:
        return shape_card(model, repo_id, license=license, datasets=datasets)
    results = results or {}
    datasets = datasets or ([results["dataset"]] if results.get("dataset") else None)
    languages = [code for code in (language_code(results.get("source_language")),
                                   language_code(results.get("target_language"))) if code]  # fmt: skip
    has_scores = "bleu" in results and "chrf" in results
    model_name = repo_id.split("/")[-1]
    corpus = results.get("corpus", "test set")
    eval_results = None
    if has_scores:
        dataset = {"dataset_type": (datasets or [corpus])[0], "dataset_name": corpus, "dataset_split": "test"}
        eval_results = [
            EvalResult(task_type="translation", metric_type=metric, metric_value=results[metric], **dataset)
            for metric in ("bleu", "chrf")
        ]
    card_data = ModelCardData(
        language=languages or None,
        license=license,
        library_name="transformers",
        pipeline_tag="translation",
        tags=[CARD_TAG, "translation", "seq2seq", "transformer", "custom_code"],
        datasets=datasets,
        metrics=["bleu", "chrf"],
        model_name=model_name,
        eval_results=eval_results,
    )
    direction = " → ".join(languages) if len(languages) == 2 else None
    summary = f"A {direction} translation model" if direction else "A sequence-to-sequence model"
    summary += " with the architecture of the original Transformer (Vaswani et al., 2017)."
    examples = results.get("examples") or []
    scores = None
    if has_scores:
        scores = {key: results.get(key) for key in ("bleu", "chrf", "bleu_signature", "chrf_signature", "beam",
                                                     "length_penalty")}  # fmt: skip
        scores.update(corpus=corpus, sentences=results.get("test_sentences"))
    return ModelCard.from_template(
        card_data,
        template_str=TEMPLATE,
        model_name=model_name,
        repo_id=repo_id,
        summary=summary,
        architecture=architecture_rows(model),
        deviations=deviations(model.config),
        training=training_rows(results),
        scores=scores,
        examples=[{k: e[k].replace("|", "\\|") for k in ("source", "reference", "translation")} for e in examples[:3]],
        example=min((e["source"] for e in examples), key=len, default="The house is small."),
        curves=curves,
        decoding=decoding(model.generation_config),
    )


def decoding(generation_config) -> str:
    """The card's sentence on what `generate()` does by default: what the checkpoint's generation config says."""
    beams = getattr(generation_config, "num_beams", None) or 1
    if beams == 1:
        return ("`generate()` decodes greedily by default; the paper's decoding (Section 6.1) is "
                "`generate(..., num_beams=4, length_penalty=0.6)`.")  # fmt: skip
    penalty = getattr(generation_config, "length_penalty", None)
    penalty = 1.0 if penalty is None else penalty
    paper = " (the paper's, Section 6.1)" if (beams, penalty) == (4, 0.6) else ""
    return f"`generate()` decodes by default with beam search, {beams} beams and length penalty {penalty}{paper}."


# The encoder-only and decoder-only models (docs/shapes.md): what each is, its Auto class and pipeline task.
SHAPES = {
    "VaswaniForCausalLM": ("AutoModelForCausalLM", "text-generation", "decoder",
                           "A GPT-style language model: the Transformer's decoder stack without encoder-decoder attention"),
    "VaswaniDecoderModel": ("AutoModel", "feature-extraction", "decoder",
                            "The Transformer's decoder stack alone, without encoder-decoder attention"),
    "VaswaniForMaskedLM": ("AutoModelForMaskedLM", "fill-mask", "encoder",
                           "A BERT-style masked language model: the Transformer's encoder stack"),
    "VaswaniForSequenceClassification": ("AutoModelForSequenceClassification", "text-classification", "encoder",
                                         "A sequence classifier on the Transformer's encoder stack (mean pooling)"),
    "VaswaniForTokenClassification": ("AutoModelForTokenClassification", "token-classification", "encoder",
                                      "A token classifier on the Transformer's encoder stack"),
    "VaswaniEncoderModel": ("AutoModel", "feature-extraction", "encoder", "The Transformer's encoder stack alone"),
}  # fmt: skip

SHAPE_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }} (Vaswani et al., 2017, "Attention Is All You Need"), as implemented by
[vaswani](https://pypi.org/project/vaswani/): post-LN residual blocks, sinusoidal positions, embeddings scaled by
sqrt(d_model) and tied to the output projection.

""" + ARCHITECTURE + """
## Usage

```python
import vaswani  # registers the model with the Auto classes; without it, pass trust_remote_code=True
from transformers import {{ auto_class }}, AutoTokenizer, pipeline

model = {{ auto_class }}.from_pretrained("{{ repo_id }}")
tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}")
task = pipeline("{{ task }}", model=model, tokenizer=tokenizer)
```
"""


def shape_card(model, repo_id: str, *, license: str, datasets: list[str] | None) -> ModelCard:
    """The card of an encoder-only or decoder-only model: what it is, its stack, and how to load it."""
    name = type(model).__name__
    auto_class, task, stack, summary = SHAPES.get(name, ("AutoModel", "feature-extraction", "encoder", name))
    c = model.config
    layers, heads, d_ff = (
        (c.encoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim) if stack == "encoder"
        else (c.decoder_layers, c.decoder_attention_heads, c.decoder_ffn_dim)
    )  # fmt: skip
    architecture = [("d_model", c.d_model), (f"{stack} layers", layers), ("attention heads", heads), ("d_ff", d_ff),
                    ("activation", c.activation_function), ("dropout", c.dropout), ("vocabulary", c.vocab_size),
                    ("parameters", f"{model.num_parameters():,}")]  # fmt: skip
    card_data = ModelCardData(license=license, library_name="transformers", pipeline_tag=task, datasets=datasets,
                              tags=[CARD_TAG, task, "transformer", "custom_code"], model_name=repo_id.split("/")[-1])  # fmt: skip
    return ModelCard.from_template(
        card_data, template_str=SHAPE_TEMPLATE, model_name=repo_id.split("/")[-1], repo_id=repo_id, summary=summary,
        architecture=architecture, deviations=deviations(c), auto_class=auto_class, task=task,
    )  # fmt: skip
