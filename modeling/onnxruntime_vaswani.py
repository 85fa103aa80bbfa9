"""ONNX Runtime behind `generate()`: optimum's `ORTModelForSeq2SeqLM`, for vaswani on transformers 5.

optimum's ONNX Runtime classes stop at transformers 4.57 (optimum-onnx 0.1.0 requires transformers < 4.58). This
module gives vaswani models the same interface, so that code written for optimum runs with one import changed:

    from vaswani import ORTModelForSeq2SeqLM

    model = ORTModelForSeq2SeqLM.from_pretrained("runs/en-de/model", export=True)  # or an exported folder
    model.generate(**tokenizer(["The house is small."], return_tensors="pt"))
    model.save_pretrained("runs/en-de/onnx")

The class is a transformers `PreTrainedModel` with no parameters of its own, whose `forward` runs ONNX Runtime
sessions; `generate()` is transformers' own GenerationMixin (greedy, beam search, sampling, logits processors,
stopping criteria), and the pipelines take it as they take the PyTorch model. The folder layout and the input and
output names are optimum's (`onnx_export.py` writes them):

    encoder_model.onnx            input_ids, attention_mask -> last_hidden_state
    decoder_model.onnx            input_ids, encoder_hidden_states, encoder_attention_mask
                                  -> logits, present.{i}.decoder.key/value, present.{i}.encoder.key/value
    decoder_with_past_model.onnx  input_ids (one new token), encoder_attention_mask, past_key_values.{i}.*
                                  -> logits, present.{i}.decoder.key/value

The first decoding step runs `decoder_model.onnx`, which also computes the encoder-decoder attention's keys and
values (Section 3.2.3) once per sentence; every later step runs `decoder_with_past_model.onnx` on the new token with
the past of both attentions. The past lives in transformers' own `EncoderDecoderCache`, so beam search reorders it as
it reorders the PyTorch model's (`_reorder_cache`: the self-attention past only).

Needs `onnxruntime` (`pip install "vaswani[serve]"`); exporting also needs `onnx` and `onnxscript`.
"""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from vaswani.configuration import VaswaniConfig
from vaswani.modeling.compat_vaswani import accepts_past_key_values, with_cache
from vaswani.modeling.modeling_vaswani import bound_output_length, output_length, reorder_self_attention
from vaswani.modeling.onnx_export import GRAPH_FILES, past_names

logger = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE = ONNX_FILES = GRAPH_FILES
# What the export records beside the graphs (optimum keeps its quantization settings in a file of this name).
ORT_CONFIG_FILE = "ort_config.json"
INSTALL_HINT = "ONNX Runtime is not installed: `pip install 'vaswani[serve]'` (or `pip install onnxruntime`)."


class OnnxModelError(ValueError):
    """An exported folder that cannot serve this model: graphs missing, or graphs of another model."""


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    return onnxruntime


def session_options(threads: int | None = None):
    """ONNX Runtime's session options as this class sets them by default: `threads` intra-op threads (None: ONNX
    Runtime's choice) and no spinning. Between two session runs, `generate()` runs torch's own operations (the
    scores' softmax and top-k, the beams' reordering); ONNX Runtime's threads, left spinning after a run, took the
    cores from them: beam-4 decoding of the small model at batch 1 with 2 threads took 26 ms a step spinning and
    11 ms not (2026-12-07, 2-core AMD EPYC, a loaded machine)."""
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtSession:
    """One ONNX Runtime session: feeds torch tensors as numpy arrays (no copy for contiguous CPU tensors) and gives
    its outputs back as torch tensors (no copy either)."""

    def __init__(self, path: Path, providers, session_options):
        onnxruntime = import_onnxruntime()
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), sess_options=session_options, providers=providers)
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.output_shapes = {node.name: node.shape for node in self.session.get_outputs()}

    def run(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        feed = {name: inputs[name].contiguous().numpy() for name in self.input_names}
        return [torch.from_numpy(output) for output in self.session.run(self.output_names, feed)]


class ORTEncoder:
    """The encoder graph, called as `generate()` calls a model's encoder: returns a `BaseModelOutput`."""

    main_input_name = "input_ids"

    def __init__(self, session: OrtSession):
        self.session = session

    def __call__(self, *args, **kwargs) -> BaseModelOutput:
        return self.forward(*args, **kwargs)

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **kwargs):
        refuse_unavailable_outputs(kwargs, "encoder")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        (hidden,) = self.session.run({"input_ids": input_ids.long(), "attention_mask": attention_mask.long()})
        return BaseModelOutput(last_hidden_state=hidden)  # (B, S, d_model)


# Keywords that generate may hand the encoder or decoder and that change nothing here.
PASSED_THROUGH = frozenset({"return_dict", "use_cache", "labels", "cache_position"})


def refuse_unavailable_outputs(kwargs: dict, part: str) -> None:
    """The graphs compute logits and the past only: asking for attentions or hidden states is an error, not a
    silently missing field; any other unknown keyword too."""
    for name in ("output_attentions", "output_hidden_states"):
        if kwargs.pop(name, None):
            raise ValueError(f"`{name}=True` is not available from the ONNX Runtime {part}: the exported graphs "
                             "compute logits only. Use the PyTorch model for attentions and hidden states.")  # fmt: skip
    unknown = sorted(set(kwargs) - PASSED_THROUGH)
    if unknown:
        raise TypeError(f"ORTModelForSeq2SeqLM's {part} got unexpected keyword arguments {unknown}.")


def set_layer(layer, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Stores a graph's present keys and values, (B, h, L, d_k) each, as a cache layer's whole content: the graph
    already appended the new position, so the cache's own `update` (which appends) is not the operation here."""
    layer.keys, layer.values = keys, values
    layer.device, layer.is_initialized = keys.device, True


vaswani_session_options = session_options  # the name `from_pretrained`'s argument does not hide


class ORTModelForSeq2SeqLM(PreTrainedModel, GenerationMixin):
    """A vaswani translation model run by ONNX Runtime, with optimum's interface (`from_pretrained(...,
    export=True)`, `save_pretrained`, `generate`). Build it with `from_pretrained`; `forward` takes the arguments of
    `VaswaniForConditionalGeneration.forward` that an exported graph can compute (no `labels`, no attentions).

    Constructor arguments (`from_pretrained` and `from_folder` pass them): `config`, the model's `VaswaniConfig`;
    `sessions`, the three graphs' sessions by part ("encoder", "decoder", "decoder_with_past"); `model_save_dir`,
    the folder they came from (what `save_pretrained` copies); `generation_config`, the export's (None: from the
    config); `ort_config`, what `ort_config.json` records (quantization, positions covered); `temporary_dir`, the
    temporary folder of an on-the-fly export, kept as long as the model lives."""

    config_class = VaswaniConfig
    main_input_name = "input_ids"
    base_model_prefix = "model"
    _supports_cache_class = True
    _is_stateful = False

    def __init__(self, config: VaswaniConfig, sessions: dict[str, OrtSession], *, model_save_dir: Path,
                 generation_config: GenerationConfig | None = None, ort_config: dict | None = None,
                 temporary_dir: tempfile.TemporaryDirectory | None = None):  # fmt: skip
        super().__init__(config)
        self.encoder = ORTEncoder(sessions["encoder"])
        self.decoder_session = sessions["decoder"]
        self.decoder_with_past_session = sessions["decoder_with_past"]
        self.model_save_dir = Path(model_save_dir)
        self._temporary_dir = temporary_dir  # an on-the-fly export lives as long as the model
        self.ort_config = ort_config or {}
        self.max_positions = self.ort_config.get("max_positions", config.max_position_embeddings)
        if generation_config is not None:
            self.generation_config = generation_config
        self.past_input_names = past_names("past_key_values", config.decoder_layers)
        self.post_init()

    # ---- what transformers reads off a model ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # inputs and outputs are CPU tensors; the session's provider runs the graph

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def get_encoder(self, *args, **kwargs) -> ORTEncoder:
        return self.encoder

    def _supports_default_dynamic_cache(self) -> bool:
        return True

    # ---- loading and saving -----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, export: bool = False, *, provider: str = "CPUExecutionProvider",
                        providers=None, session_options=None, revision: str | None = None, token=None,
                        local_files_only: bool = False, trust_remote_code: bool = False, quantize: str | None = None,
                        max_positions: int | None = None, **kwargs) -> "ORTModelForSeq2SeqLM":  # fmt: skip
        """Loads an exported folder (or Hub repository), or with `export=True` exports a vaswani checkpoint (folder or
        Hub id) first, into a temporary folder that `save_pretrained` copies.

        Args:
            model_id: an exported folder or Hub id; with `export=True`, a PyTorch checkpoint's.
            export: export `model_id` now (`vaswani.export_onnx`), as optimum's `export=True`.
            provider, providers: ONNX Runtime's execution provider(s) (default: the CPU's).
            session_options: an `onnxruntime.SessionOptions` (thread counts, graph optimizations); default:
                `session_options()`, ONNX Runtime's thread count without spinning threads.
            revision, token, local_files_only, trust_remote_code: as in transformers' `from_pretrained`.
            quantize: with `export=True`, "int8" for ONNX Runtime's dynamic int8 quantization of the graphs.
            max_positions: with `export=True`, the positions the graphs cover (default: the config's
                `max_position_embeddings`).
            kwargs: none are taken; an unknown keyword raises a TypeError rather than being ignored.
        """
        if kwargs:
            raise TypeError(f"ORTModelForSeq2SeqLM.from_pretrained() got unexpected keyword arguments {sorted(kwargs)}.")
        import_onnxruntime()
        hub = {"revision": revision, "token": token, "local_files_only": local_files_only}
        temporary_dir = None
        if export:
            from vaswani.modeling.onnx_export import export_onnx

            temporary_dir = tempfile.TemporaryDirectory(prefix="vaswani-onnx-")
            export_onnx(model_id, temporary_dir.name, quantize=quantize, max_positions=max_positions,
                        trust_remote_code=trust_remote_code, **hub)  # fmt: skip
            folder = Path(temporary_dir.name)
        else:
            if quantize is not None or max_positions is not None:
                raise ValueError("`quantize` and `max_positions` are export options: pass them with `export=True`.")
            folder = resolve_folder(model_id, **hub)
        session_options = session_options if session_options is not None else vaswani_session_options()
        return cls.from_folder(folder, providers=providers or [provider], session_options=session_options,
                               temporary_dir=temporary_dir)  # fmt: skip

    @classmethod
    def from_folder(cls, folder: Path, *, providers, session_options=None, temporary_dir=None):
        missing = [name for name in ONNX_FILES if not (folder / name).is_file()]
        if missing:
            hint = ("it holds a PyTorch checkpoint: pass `export=True`, or run `vaswani-export-onnx` on it"
                    if (folder / "model.safetensors").is_file() else "export one with `vaswani-export-onnx`")  # fmt: skip
            raise OnnxModelError(f"{folder} has no exported vaswani graphs (missing {', '.join(missing)}); {hint}.")
        config = load_config(folder)
        sessions = {
            "encoder": OrtSession(folder / ENCODER_FILE, providers, session_options),
            "decoder": OrtSession(folder / DECODER_FILE, providers, session_options),
            "decoder_with_past": OrtSession(folder / DECODER_WITH_PAST_FILE, providers, session_options),
        }
        check_graphs(config, sessions)
        generation_config = None
        if (folder / "generation_config.json").is_file():
            generation_config = GenerationConfig.from_pretrained(folder)
        ort_config = json.loads((folder / ORT_CONFIG_FILE).read_text()) if (folder / ORT_CONFIG_FILE).is_file() else {}
        return cls(config, sessions, model_save_dir=folder, generation_config=generation_config,
                   ort_config=ort_config, temporary_dir=temporary_dir)  # fmt: skip

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs) -> None:
        """Writes the graphs, the config, the generation config, the export's `ort_config.json` and the tokenizer
        files that came with the export into `save_directory`: a folder `from_pretrained` loads. `kwargs` (transformers'
        saving options such as `safe_serialization`) do not apply to ONNX graphs and are refused if given."""
        if kwargs:
            raise TypeError(f"ORTModelForSeq2SeqLM.save_pretrained() takes no options for ONNX graphs: {sorted(kwargs)}.")
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        if save_directory.resolve() != self.model_save_dir.resolve():
            for path in self.model_save_dir.iterdir():
                if path.is_file():
                    shutil.copyfile(path, save_directory / path.name)
        self.config.save_pretrained(save_directory)
        self.generation_config.save_pretrained(save_directory)

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload ONNX model", private: bool | None = None,
                    token=None, revision: str | None = None, create_pr: bool = False) -> str:  # fmt: skip
        """Uploads the export (`save_pretrained`'s folder) to the Hub repository `repo_id`, created if missing, in
        one commit; `from_pretrained(repo_id)` loads it back. Returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                       revision=revision, create_pr=create_pr)  # fmt: skip
        return commit.commit_url

    # ---- running ----------------------------------------------------------------------------------------------
    @accepts_past_key_values
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: tuple[torch.Tensor] | BaseModelOutput | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        """Logits of the target positions given, (B, T, V), and with `use_cache` the past for the next step.

        `cache` (or `past_key_values`): an `EncoderDecoderCache` holding the past of both attentions, as `generate`
        passes it; empty or None, the whole `decoder_input_ids` prefix runs through `decoder_model.onnx`. With a past,
        `decoder_input_ids` is the one new token. `decoder_attention_mask` may only mark every position real: the
        graphs take no target padding.

        Args:
            input_ids, attention_mask: the source, (B, S), and its mask (1 real, 0 padding; None: no padding).
            decoder_input_ids: the target prefix (B, T), or the one new token (B, 1) with a past in `cache`.
            decoder_attention_mask: None or all ones.
            encoder_outputs: an earlier encoding of the same source (what `generate` passes), used instead of
                `input_ids`.
            cache: the past, as above; use_cache: return the past for the next step (default: the config's).
            kwargs: what `generate` passes and the graphs need not read (`return_dict`, ...); `output_attentions` or
                `output_hidden_states` set raise a ValueError (the graphs compute logits only), others a TypeError.
        """
        refuse_unavailable_outputs(kwargs, "model")
        if decoder_input_ids is None:
            raise ValueError("ORTModelForSeq2SeqLM needs `decoder_input_ids` (the target prefix; `generate` passes it).")
        if decoder_attention_mask is not None and not bool(decoder_attention_mask.all()):
            raise ValueError("The exported decoder takes no target padding: pass `decoder_attention_mask=None` (or "
                             "all ones), or use the PyTorch model for padded targets.")  # fmt: skip
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if encoder_outputs is None:
            if input_ids is None:
                raise ValueError("ORTModelForSeq2SeqLM needs `input_ids` (the source) or `encoder_outputs`.")
            encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(*encoder_outputs)
        hidden = encoder_outputs.last_hidden_state  # (B, S, d_model)
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long)
        past_length = cache.get_seq_length() if cache is not None else 0
        self.check_positions(past_length + decoder_input_ids.shape[1], hidden.shape[1])
        inputs = {"input_ids": decoder_input_ids.long(), "encoder_attention_mask": attention_mask.long()}
        if past_length == 0:
            inputs["encoder_hidden_states"] = hidden
            logits, *present = self.decoder_session.run(inputs)
        else:
            if decoder_input_ids.shape[1] != 1:
                raise ValueError(f"With a past, the exported decoder takes one new token at a time, got "
                                 f"{decoder_input_ids.shape[1]}.")  # fmt: skip
            inputs.update(zip(self.past_input_names, past_tensors(cache), strict=True))
            logits, *present = self.decoder_with_past_session.run(inputs)
        if use_cache:
            cache = self.store_present(cache, present)
        return Seq2SeqLMOutput(logits=logits, **with_cache(cache if use_cache else None),
                               encoder_last_hidden_state=hidden)  # fmt: skip

    def store_present(self, cache: EncoderDecoderCache | None, present: list[torch.Tensor]) -> EncoderDecoderCache:
        """Puts a step's present tensors into the cache: both attentions' after the first step, the self-attention's
        after later ones (the encoder-decoder keys and values do not change while decoding)."""
        if cache is None:
            cache = EncoderDecoderCache(DynamicCache(config=self.config), DynamicCache(config=self.config))
        first = len(present) == 4 * self.config.decoder_layers
        per_layer = 4 if first else 2
        for i in range(self.config.decoder_layers):
            k, v = present[per_layer * i], present[per_layer * i + 1]  # (B, h, past + T, d_k)
            set_layer(cache.self_attention_cache.layers[i], k, v)
            if first:
                set_layer(cache.cross_attention_cache.layers[i], present[4 * i + 2], present[4 * i + 3])
                cache.is_updated[i] = True
        return cache

    def check_positions(self, target_length: int, source_length: int) -> None:
        if max(target_length, source_length) > self.max_positions:
            raise ValueError(
                f"This export covers {self.max_positions} positions, but the {'target' if target_length > source_length else 'source'} "
                f"needs {max(target_length, source_length)}: bound the output (`max_new_tokens`), shorten the input, "
                "or export again with more (`vaswani-export-onnx --max-positions N`)."
            )

    def _reorder_cache(self, cache: Cache, beam_idx: torch.Tensor) -> Cache:
        """Beam search's cache update, as the PyTorch model's: the self-attention past follows the beams kept."""
        return reorder_self_attention(cache, beam_idx)

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, *args, **kwargs):
        """transformers' `generate`, with the PyTorch model's output bound (input length + 50 where nothing else
        bounds it, `bound_output_length`) and the export's positions checked before any work.

        `inputs` (or `input_ids=`) are the source ids, (B, S), with their `attention_mask`; `generation_config`,
        `args` and `kwargs` are transformers' (`num_beams`, `max_new_tokens`, `do_sample`, `logits_processor`, ...),
        the export's generation config (the checkpoint's) by default. Returns the generated ids as the PyTorch model
        does."""
        generation_config = bound_output_length(inputs, generation_config, self.generation_config, kwargs)
        config = generation_config or self.generation_config
        if (kwargs.get("cache_implementation") or config.cache_implementation) not in (None, "dynamic"):
            raise ValueError("ONNX Runtime's decoder keeps its past in a dynamic cache: leave `cache_implementation` "
                             "unset (a static cache and compiled decoding are for the PyTorch model).")  # fmt: skip
        source = inputs if inputs is not None else kwargs.get("input_ids")
        if source is not None:
            self.check_positions(output_length(config, kwargs) or 0, source.shape[-1])
        return super().generate(inputs, generation_config, *args, **kwargs)


def past_tensors(cache: EncoderDecoderCache) -> list[torch.Tensor]:
    """The cache's tensors in the order of `past_names`: per layer, self-attention key and value, then
    encoder-decoder key and value."""
    tensors = []
    for own, cross in zip(cache.self_attention_cache.layers, cache.cross_attention_cache.layers, strict=True):
        tensors += [own.keys, own.values, cross.keys, cross.values]
    return tensors


def resolve_folder(model_id, *, revision=None, token=None, local_files_only=False) -> Path:
    """A local folder as it is; a Hub id downloaded (graphs, configs and tokenizer files)."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import snapshot_download

    patterns = ["*.onnx", "*.onnx_data", "*.json", "*.model", "*.txt"]
    return Path(snapshot_download(str(model_id), revision=revision, token=token, allow_patterns=patterns,
                                  local_files_only=local_files_only))  # fmt: skip


def load_config(folder: Path) -> VaswaniConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise OnnxModelError(f"{folder} has ONNX graphs but no config.json: export the model again.")
    model_type = json.loads(path.read_text()).get("model_type")
    if model_type != VaswaniConfig.model_type:
        raise OnnxModelError(f"{path} describes a {model_type!r} model: ORTModelForSeq2SeqLM of vaswani runs "
                             "vaswani exports (convert MarianMT checkpoints first: `vaswani-convert-marian`).")  # fmt: skip
    return VaswaniConfig.from_pretrained(folder)


def check_graphs(config: VaswaniConfig, sessions: dict[str, OrtSession]) -> None:
    """The graphs must be of the model the config describes: its layer count (the past's names), width and
    vocabulary (the outputs' sizes). A folder whose graphs came from another export fails here, not mid-decoding."""
    layers = config.decoder_layers
    expected = {
        "decoder": ["logits", *past_names("present", layers)],
        "decoder_with_past": ["logits", *past_names("present", layers, ("decoder",))],
    }
    for part, names in expected.items():
        if sessions[part].output_names != names:
            raise OnnxModelError(f"{sessions[part].path} does not match config.json ({layers} decoder layers): the "
                                 "graphs come from another model. Export this model again.")  # fmt: skip
    sizes = {
        ("encoder", "last_hidden_state", 2): config.d_model,
        ("decoder", "logits", 2): config.decoder_vocabulary,
        ("decoder_with_past", "logits", 2): config.decoder_vocabulary,
    }
    for (part, output, axis), size in sizes.items():
        found = sessions[part].output_shapes[output][axis]
        if isinstance(found, int) and found != size:
            raise OnnxModelError(f"{sessions[part].path}'s `{output}` has size {found} where config.json says {size}: "
                                 "the graphs come from another model. Export this model again.")  # fmt: skip


__all__ = ["ORTModelForSeq2SeqLM", "OnnxModelError"]
