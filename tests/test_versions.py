"""The transformers releases vaswani supports: the names that moved between them (compat_vaswani.py), the stated
window and the lock, refused and ignored inputs, and checkpoints saved by an older vaswani.

Every CI lane runs this file under other releases (.ci/run): the assertions hold on each supported release, and
say which way a name must point on which release."""

import copy
import importlib.util
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import typing
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from conftest import random_batch, tiny_model
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from transformers import AutoModelForSeq2SeqLM
from transformers.utils import is_kernels_available

import vaswani
from vaswani.modeling import compat_vaswani as compat
from vaswani.modeling.checkpoint_vaswani import checkpoint_code_files
from vaswani.modeling.modeling_vaswani import (
    VaswaniDecoder,
    VaswaniEncoder,
    VaswaniForConditionalGeneration,
    VaswaniModel,
    VaswaniPreTrainedModel,
)
from vaswani.scripts import refresh_checkpoint

ROOT = Path(__file__).parent.parent
OLD_CODE = Path(__file__).parent / "data" / "vaswani-0.1.0"  # the code files of checkpoints saved by vaswani 0.1.0
RENAMED = Version(transformers.__version__).release >= (5, 24)  # transformers 5.24 renamed past_key_values to cache
LANE = os.environ.get("VASWANI_CI_LANE", "")  # set by .ci/lane.sh


def windows() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(r) for r in extra if Requirement(r).name != "vaswani"]  # not "vaswani[serve]"
    return {r.name.lower().replace("_", "-"): r.specifier for r in requirements}


def locked() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    return {name.lower().replace("_", "-"): version for name, version in pins.items()}


def subprocess_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    return env


# --- the names that moved -------------------------------------------------------------------------------------
def test_the_names_read_off_transformers_are_those_of_its_release():
    expected = "cache" if RENAMED else "past_key_values"
    assert compat.GENERATE_CACHE_NAME == compat.OUTPUT_CACHE_FIELD == compat.MASK_CACHE_NAME == expected


def test_window_lock_and_installed_releases_agree():
    stated = windows()
    assert stated["transformers"] == SpecifierSet(compat.SUPPORTED_TRANSFORMERS)  # the remote code's copy of it
    pins = locked()
    for name, window in stated.items():
        assert name in pins, f"requirements.lock does not pin {name}: run `bash scripts/lock.sh`"
        assert window.contains(pins[name], prereleases=True), f"the lock's {name} {pins[name]} is outside {window}"
    if LANE != "beyond":  # that lane installs releases beyond the windows on purpose
        installed = Version(transformers.__version__)
        assert stated["transformers"].contains(installed), f"transformers {installed} is outside the window"


def test_either_name_of_the_cache_decodes_alike_and_both_at_once_is_refused():
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    encoded = dict(input_ids=input_ids, attention_mask=attention_mask)
    steps = {}
    for name in ("cache", "past_key_values"):
        first = model(**encoded, decoder_input_ids=input_ids[:, :2], use_cache=True)
        cache = compat.cache_of(first)
        assert cache is not None and cache.get_seq_length() == 2
        steps[name] = model(**encoded, decoder_input_ids=input_ids[:, 2:3], use_cache=True, **{name: cache}).logits
    whole = model(**encoded, decoder_input_ids=input_ids[:, :3]).logits[:, 2:3]
    torch.testing.assert_close(steps["cache"], whole)
    torch.testing.assert_close(steps["past_key_values"], whole)
    cache = compat.cache_of(model(**encoded, decoder_input_ids=input_ids[:, :2], use_cache=True))
    other = compat.cache_of(model(**encoded, decoder_input_ids=input_ids[:, :2], use_cache=True))
    with pytest.raises(ValueError, match="both `cache` and `past_key_values`"):
        model(**encoded, decoder_input_ids=input_ids[:, 2:3], cache=cache, past_key_values=other)


def test_the_old_name_of_the_cache_warns_as_transformers_models_warn_where_it_is_deprecated():
    """From 5.24 transformers' models deprecate `past_key_values=` in their forwards (`deprecate_kwarg`, removed in
    5.40); on 5.23 it is the name generate passes, and nothing warns."""
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    encoded = dict(input_ids=input_ids, attention_mask=attention_mask)
    steps = {"cache": None}
    for module in (model, model.model):
        for name in ("cache", "past_key_values"):
            cache = compat.cache_of(model(**encoded, decoder_input_ids=input_ids[:, :2], use_cache=True))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # (`cache=None` beside the old name, as a caller forwarding every argument passes it)
                given = {name: cache} if name == "cache" else {"cache": None, name: cache}
                step = module(**encoded, decoder_input_ids=input_ids[:, 2:3], use_cache=True, **given)
            steps[name] = step.last_hidden_state if module is model.model else step.logits
            deprecated = [w for w in caught if "`past_key_values` is deprecated" in str(w.message)]
            if name == "past_key_values" and RENAMED:
                assert len(deprecated) == 1 and deprecated[0].category is FutureWarning
                assert f"{type(module).__name__}.forward" in str(deprecated[0].message)
                assert "5.40.0" in str(deprecated[0].message) and "Use `cache` instead" in str(deprecated[0].message)
            else:
                assert not deprecated, [str(w.message) for w in caught]
        torch.testing.assert_close(steps["past_key_values"], steps["cache"])  # and the cache was read, not dropped


@pytest.mark.parametrize("name", ["cache_params", "decoder_position_ids", "encoder_hidden_states_typo"])
def test_an_input_the_model_cannot_use_is_refused_not_ignored(name):
    model = tiny_model()
    input_ids, attention_mask = random_batch(batch_size=2, length=6)
    batch = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :3])
    for module in (model, model.model):
        with pytest.raises(TypeError, match=f"unexpected keyword arguments `{name}`"):
            module(**batch, **{name: torch.zeros(1)})
    with pytest.raises(TypeError, match=f"VaswaniEncoder.forward.. got unexpected keyword arguments `{name}`"):
        model.model.encoder(input_ids, attention_mask=attention_mask, **{name: torch.zeros(1)})


def test_hub_kernels_stay_off_unless_asked_for(tmp_path, monkeypatch):
    """transformers 5.25 kernelizes in `from_pretrained` by default and raises where `kernels` is missing; vaswani
    loads without them (on every release) and passes a caller's `use_kernels=True` on to transformers."""
    folder = tmp_path / "tiny"
    tiny_model().save_pretrained(folder)
    asked = []
    real = transformers.PreTrainedModel.set_use_kernels

    def spy(self, use_kernels, *args, **kwargs):
        asked.append(use_kernels)
        return real(self, use_kernels, *args, **kwargs)

    monkeypatch.setattr(transformers.PreTrainedModel, "set_use_kernels", spy)
    for load in (VaswaniForConditionalGeneration.from_pretrained, AutoModelForSeq2SeqLM.from_pretrained):
        assert not load(folder).use_kernels
        assert not load(folder, use_kernels=None).use_kernels
    assert asked == [False] * 4
    if not is_kernels_available():  # transformers says what is missing
        with pytest.raises(ValueError, match="(?i)kernels"):
            AutoModelForSeq2SeqLM.from_pretrained(folder, use_kernels=True)
        assert asked[-1] is True
    else:  # as transformers 5.25 installs it: kernelized offline, nothing replaced, the same tokens
        kernelized = AutoModelForSeq2SeqLM.from_pretrained(folder, use_kernels=True)
        assert asked[-1] is True and kernelized.use_kernels
        input_ids, attention_mask = random_batch(batch_size=2, length=6)
        plain = VaswaniForConditionalGeneration.from_pretrained(folder)
        assert torch.equal(
            kernelized.generate(input_ids, attention_mask=attention_mask, num_beams=2, max_new_tokens=6),
            plain.generate(input_ids, attention_mask=attention_mask, num_beams=2, max_new_tokens=6),
        )


# --- the guard ------------------------------------------------------------------------------------------------
def drop_the_cache(model) -> None:
    """Makes `model` behave as vaswani 0.1.0 did under transformers 5.24: the cache generate passes is not read."""
    forward = model.forward

    def forgetful(*args, cache=None, past_key_values=None, **kwargs):
        return forward(*args, **kwargs)

    model.forward = forgetful


def test_the_decoding_check_passes_a_sound_model_and_names_transformers_for_a_broken_one():
    model = tiny_model(seed=1)
    input_ids, attention_mask = random_batch(batch_size=3, length=8)
    assert compat.check_cached_decoding(model, input_ids, attention_mask) < 1e-4
    drop_the_cache(model)
    with pytest.raises(compat.CachedDecodingError, match=f"transformers {transformers.__version__}"):
        compat.check_cached_decoding(model, input_ids, attention_mask)


def large_logits_model(precision: str, dropped_cache: bool = False):
    """A model of the job's width with large logits, as a trained one has, in `precision`."""
    model = tiny_model(seed=0, d_model=256, encoder_ffn_dim=1024, decoder_ffn_dim=1024, vocab_size=2000,
                       attn_implementation="sdpa")  # fmt: skip
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    if dropped_cache:  # in the model's own forward, under any wrapper
        drop_the_cache(model)
    if precision == "bf16 weights":
        return model.to(torch.bfloat16)
    if precision == "Trainer's bf16 wrapper":  # what Trainer(bf16=True) leaves on the model it trained
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)  # an earlier test's Trainer left its own state
        try:
            model = Accelerator(cpu=True, mixed_precision="bf16").prepare_model(model)
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
        assert "_original_forward" in model.__dict__
    return model


@pytest.mark.parametrize("precision", ["bf16 weights", "bf16 autocast", "Trainer's bf16 wrapper"])
def test_the_decoding_check_runs_in_float32_and_gives_the_model_back_as_it_was(precision):
    # In bf16 the rounding alone moves this model's log-probabilities by about 0.3 between the cached and the whole
    # pass (a check in bf16 failed a sound model), a dropped cache by about 2.
    input_ids, attention_mask = random_batch(batch_size=4, length=20, vocab_size=2000)
    context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast")
    model = large_logits_model(precision)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    forward = model.forward
    with context:
        assert compat.check_cached_decoding(model, input_ids, attention_mask) < 1e-4
    after = model.state_dict()
    assert all(
        after[name].dtype == tensor.dtype and torch.equal(after[name], tensor) for name, tensor in before.items()
    )
    assert model.forward == forward and not model.training
    with context, pytest.raises(compat.CachedDecodingError, match="differ by up to [0-9.]+ over 24 steps"):
        compat.check_cached_decoding(large_logits_model(precision, dropped_cache=True), input_ids, attention_mask)


# --- the window at import -------------------------------------------------------------------------------------
IMPORT_WITH_VERSION = """
import logging, sys
from importlib import metadata
real = metadata.version
metadata.version = lambda name: sys.argv[1] if name == "transformers" else real(name)
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")
try:
    import vaswani
except ImportError as error:
    print("REFUSED", error)
else:
    print("IMPORTED", vaswani.VaswaniConfig.model_type)
"""


@pytest.mark.parametrize("version, outcome", [("5.22.2", "REFUSED"), ("4.57.6", "REFUSED"), ("5.99.0", "IMPORTED")])
def test_import_refuses_a_transformers_below_the_window_and_warns_above_it(tmp_path, version, outcome):
    result = subprocess.run([sys.executable, "-c", IMPORT_WITH_VERSION, version], capture_output=True, text=True,
                            cwd=tmp_path, env=subprocess_env(tmp_path))  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert outcome in output, output
    if outcome == "REFUSED":
        assert f"transformers {version} is installed" in output and compat.SUPPORTED_TRANSFORMERS in output
    else:
        assert f"LOG transformers {version} is newer than the releases vaswani is tested with" in output


# --- no warnings from our code --------------------------------------------------------------------------------
NO_DEPRECATIONS = """
import logging, sys, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("always")
import transformers
records = []
handler = logging.Handler()
handler.emit = records.append
transformers.logging.get_logger("transformers").addHandler(handler)
transformers.logging.set_verbosity_warning()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import torch
    from conftest import random_batch, tiny_model
    from vaswani.modeling.compat_vaswani import cache_of
    model = tiny_model()
    ids, mask = random_batch()
    for kwargs in ({}, {"num_beams": 3}, {"cache_implementation": "static"}, {"do_sample": True}):
        model.generate(ids, attention_mask=mask, max_new_tokens=5, **kwargs)
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :2], use_cache=True)
    model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, 2:3], cache=cache_of(out))
    model.train()
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
messages = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
messages += [r.getMessage() for r in records if "deprecat" in r.getMessage().lower()]
print("MESSAGES", messages)
"""


def test_no_deprecation_or_future_warnings_from_vaswani(tmp_path):
    result = subprocess.run([sys.executable, "-c", NO_DEPRECATIONS, str(Path(__file__).parent)], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MESSAGES []" in result.stdout, result.stdout[-3000:]


# --- the base classes' signatures and conventions --------------------------------------------------------------
VASWANI_CLASSES = (VaswaniPreTrainedModel, VaswaniModel, VaswaniForConditionalGeneration, VaswaniEncoder,
                   VaswaniDecoder)  # fmt: skip


def overridden_methods():
    """(class, name, our function, the base's function) for every method a vaswani model class defines over one of
    transformers' or torch's classes; `forward`, which torch's Module declares as `forward(*input)`, aside."""
    for cls in VASWANI_CLASSES:
        for name, attribute in vars(cls).items():
            method = inspect.isfunction(attribute) or isinstance(attribute, classmethod | staticmethod)
            if name.startswith("__") or name == "forward" or not method:  # (not `config_class`, a class)
                continue
            base = next((b for b in cls.__mro__[1:] if b not in VASWANI_CLASSES and name in vars(b)), None)
            if base is not None:  # through the classes, so that classmethods compare bound alike
                yield cls, name, getattr(cls, name), getattr(base, name)


def signature_gaps(ours, base) -> list[str]:
    """What a call that the base's signature allows would find missing in ours: a positional parameter at another
    place, a parameter not taken (by name or by **kwargs), a default the base has and ours lacks, or a parameter
    ours requires that the base does not have."""
    ours, base = inspect.signature(ours).parameters, inspect.signature(base).parameters
    P = inspect.Parameter
    positional = [p for p in ours.values() if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    var_positional = any(p.kind == P.VAR_POSITIONAL for p in ours.values())
    var_keyword = any(p.kind == P.VAR_KEYWORD for p in ours.values())
    gaps = []
    base_positional = [p for p in base.values() if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    for i, parameter in enumerate(base_positional):
        if i < len(positional) and positional[i].name != parameter.name:
            gaps.append(f"positional parameter {i} is `{positional[i].name}`, the base's `{parameter.name}`")
        elif i >= len(positional) and not var_positional:
            gaps.append(f"`{parameter.name}` cannot be passed by position")
    for name, parameter in base.items():
        if parameter.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            if not any(p.kind == parameter.kind for p in ours.values()):
                gaps.append(f"no `{parameter}`")
        elif name in ours:
            if parameter.default is not P.empty and ours[name].default is P.empty:
                gaps.append(f"`{name}` has no default")
        elif not var_keyword:
            gaps.append(f"`{name}` is not taken")
    for name, parameter in ours.items():
        required = parameter.default is P.empty and parameter.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)
        if required and name not in base:
            gaps.append(f"`{name}` is required and the base has no such parameter")
    return gaps


def test_every_overridden_method_takes_what_the_base_classes_method_takes():
    """A signature that drifts from transformers' is how a release breaks remote code: 5.25's exporters call
    `get_encoder(modality=...)`, which vaswani's `get_encoder(self)` refused. Checked on every supported release."""
    checked = {f"{cls.__name__}.{name}" for cls, name, _, _ in overridden_methods()}
    assert {"VaswaniPreTrainedModel.from_pretrained", "VaswaniPreTrainedModel.save_pretrained",
            "VaswaniPreTrainedModel.push_to_hub", "VaswaniPreTrainedModel._init_weights",
            "VaswaniModel.get_input_embeddings", "VaswaniModel.set_input_embeddings",
            "VaswaniForConditionalGeneration.get_output_embeddings",
            "VaswaniForConditionalGeneration.set_output_embeddings",
            "VaswaniForConditionalGeneration.generate"} <= checked, checked  # fmt: skip
    gaps = {f"{cls.__name__}.{name}": signature_gaps(ours, base) for cls, name, ours, base in overridden_methods()}
    assert not {name: found for name, found in gaps.items() if found}, gaps


def test_the_signature_check_finds_a_dropped_argument():
    def base(self, modality: str | None = None): ...

    def dropped(self): ...

    def moved(self, other=None, modality=None): ...

    assert signature_gaps(dropped, base) == ["`modality` cannot be passed by position", "`modality` is not taken"]
    assert signature_gaps(moved, base) == ["positional parameter 1 is `other`, the base's `modality`"]
    assert not signature_gaps(lambda self, *args, **kwargs: None, base)


def test_get_encoder_takes_a_modality_as_transformers_models_do():
    model = tiny_model()
    for owner in (model, model.model):
        assert owner.get_encoder() is owner.get_encoder(modality=None) is model.model.encoder
        for modality in ("image", "audio"):  # none: the "no such encoder" answer is the model itself
            assert owner.get_encoder(modality=modality) is owner
    assert model.get_decoder() is model.model.decoder


def test_forwards_annotate_their_kwargs_as_transformers_models_do():
    """`**kwargs: Unpack[TransformersKwargs]`: transformers' tests and tools read it to learn that a model takes
    `output_attentions` (the eager-against-SDPA test with left padding was skipped for vaswani without it)."""
    for cls in (VaswaniModel, VaswaniForConditionalGeneration, VaswaniEncoder, VaswaniDecoder):
        annotation = inspect.signature(cls.forward).parameters["kwargs"].annotation
        assert typing.get_origin(annotation) is typing.Unpack, (cls, annotation)
        (fields,) = typing.get_args(annotation)
        assert fields is compat.TransformersKwargs and "output_attentions" in fields.__annotations__
    if hasattr(transformers.utils, "TransformersKwargs"):
        assert compat.TransformersKwargs is transformers.utils.TransformersKwargs  # transformers' own, not a stand-in


def exports_for_generation() -> bool:
    """Whether this transformers has `transformers.exporters.DynamoExporter().export_for_generation`."""
    if importlib.util.find_spec("transformers.exporters") is None:
        return False
    from transformers import exporters

    return hasattr(getattr(exporters, "DynamoExporter", None), "export_for_generation")


@pytest.mark.skipif(not exports_for_generation(), reason=f"transformers {transformers.__version__} has no "
                    "`transformers.exporters.DynamoExporter().export_for_generation` to export with")  # fmt: skip
def test_the_dynamo_exporter_exports_for_generation_and_the_programs_compute_what_the_model_computes():
    from transformers.exporters import DynamoConfig, DynamoExporter
    from transformers.exporters.utils import decompose_for_generation, is_multimodal

    model = tiny_model("sdpa")
    input_ids, attention_mask = random_batch(batch_size=2, length=7)
    sample = {"input_ids": input_ids, "attention_mask": attention_mask}
    assert not is_multimodal(model)
    exported = DynamoExporter().export_for_generation(model, sample, DynamoConfig())
    assert set(exported.components) == {"prefill", "decode"}
    for name, (submodel, inputs) in decompose_for_generation(model, sample).items():
        program = exported.components[name].program.module()
        taken = {key: value for key, value in inputs.items() if not isinstance(value, bool)}  # flags: traced in
        got = program(**copy.deepcopy(taken)).logits
        torch.testing.assert_close(got, submodel(**copy.deepcopy(inputs)).logits)


# --- checkpoints saved by vaswani 0.1.0 -----------------------------------------------------------------------
REMOTE_DECODE = """
import importlib.util, json, sys
sys.modules["vaswani"] = None  # as on a machine without the plugin
import torch
from transformers import AutoModelForSeq2SeqLM
spec = importlib.util.spec_from_file_location("compat", sys.argv[2])  # the current check, on the old code
compat = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compat)
model = AutoModelForSeq2SeqLM.from_pretrained(sys.argv[1], trust_remote_code=True, attn_implementation="eager").eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
data = torch.load(sys.argv[1] + "/inputs.pt")
try:
    compat.check_cached_decoding(model, data["input_ids"], data["attention_mask"])
    verdict = "AGREE"
except compat.CachedDecodingError as error:
    verdict = "DISAGREE " + str(error)
tokens = {n: model.generate(**data, num_beams=n, max_new_tokens=10).tolist() for n in (1, 4)}
default = model.generate(**data, max_new_tokens=10).tolist()  # as the checkpoint's generation_config.json says
print("RESULT " + json.dumps({"verdict": verdict, "greedy": tokens[1], "beam": tokens[4], "default": default}))
"""


def decode_as_remote_code(folder: Path, tmp_path: Path, hub_kernels: bool = True) -> dict:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    compat_file = str(ROOT / "modeling" / "compat_vaswani.py")
    env = subprocess_env(tmp_path)
    if not hub_kernels:
        env["USE_HUB_KERNELS"] = "0"
    result = subprocess.run([sys.executable, "-c", REMOTE_DECODE, str(folder), compat_file], capture_output=True,
                            text=True, cwd=elsewhere, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_old_checkpoint_code_breaks_on_the_renamed_cache_and_the_refresh_repairs_it(tmp_path, capsys):
    model = tiny_model(seed=1)
    input_ids, attention_mask = random_batch(batch_size=3, length=8)
    folder = tmp_path / "old-checkpoint"
    # vaswani 0.1.0-0.5.0 put the paper's decoding on every model: their generation_config.json carries it.
    model.generation_config = vaswani.paper_generation_config(model.generation_config)
    model.save_pretrained(folder)
    torch.save({"input_ids": input_ids, "attention_mask": attention_mask}, folder / "inputs.pt")
    (folder / "compat_vaswani.py").unlink()  # as saved by vaswani 0.1.0: its three code files, no shims
    for old in OLD_CODE.glob("*.py"):
        shutil.copyfile(old, folder / old.name)
    weights = (folder / "model.safetensors").read_bytes()
    plugin = {n: model.generate(input_ids, attention_mask=attention_mask, num_beams=n, max_new_tokens=10).tolist()
              for n in (1, 4)}  # fmt: skip

    # 0.1.0's code predates transformers 5.25's Hub-kernels default, which fails where `kernels` is not installed
    # (this machine): it loads with the switch users have, USE_HUB_KERNELS=0. The refreshed code needs none.
    before = decode_as_remote_code(folder, tmp_path, hub_kernels=False)
    if RENAMED:  # the bug of issue "5.24 renamed the cache": wrong tokens, no error
        assert before["verdict"].startswith("DISAGREE") and transformers.__version__ in before["verdict"]
        assert before["greedy"] != plugin[1]
    else:
        assert before["verdict"] == "AGREE" and before["greedy"] == plugin[1]

    refresh_checkpoint.main([str(folder)])
    printed = capsys.readouterr().out
    assert "compat_vaswani.py" in printed and "cached and uncached decoding agree" in printed
    for source in checkpoint_code_files():  # model, config, compat, pipeline: the installed plugin's
        assert (folder / source.name).read_bytes() == source.read_bytes()
    assert (folder / "model.safetensors").read_bytes() == weights  # the weights are not touched
    after = decode_as_remote_code(folder, tmp_path)
    # ... and the refreshed code decodes it as it did: beam 4, length penalty 0.6 by default.
    assert after == {"verdict": "AGREE", "greedy": plugin[1], "beam": plugin[4], "default": plugin[4]}
    assert json.loads((folder / "generation_config.json").read_text())["num_beams"] == 4


def test_refresh_refuses_what_is_not_a_vaswani_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "marian"}))
    with pytest.raises(SystemExit, match="not a vaswani checkpoint"):
        refresh_checkpoint.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="has no config.json"):
        refresh_checkpoint.main([str(tmp_path / "..")])
    with pytest.raises(SystemExit, match="neither a folder here nor a Hub repository"):
        refresh_checkpoint.main([str(tmp_path / "missing" / "deeper" / "path")])
    assert not (tmp_path / "modeling_vaswani.py").exists()


# --- transformers' own model tests, fetched per release (tests/test_transformers_common.py) ----------------------
def test_the_fetched_model_tests_import_with_stand_ins_and_a_missing_registry_is_said_not_fatal(tmp_path, monkeypatch,
                                                                                                capsys):  # fmt: skip
    from vaswani.scripts import fetch_transformers_tests as fetch

    archive = tmp_path / "transformers-9.9.9.tar.gz"
    common = "from .exporters.test_export import ExportTesterMixin\nfrom .generation.test_utils import " \
             "GenerationTesterMixin\nclass ModelTesterMixin(ExportTesterMixin): pass\n"  # fmt: skip
    config = "from .utils.test_configuration_utils import config_common_kwargs\nclass ConfigTester: pass\n"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in (("test_modeling_common.py", common), ("test_configuration_common.py", config)):
            data = text.encode()
            info = tarfile.TarInfo(f"transformers-9.9.9/tests/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(fetch, "DESTINATION", tmp_path / "suites")
    monkeypatch.setattr(fetch, "download_sdist", lambda version, into: archive)
    folder = fetch.fetch("9.9.9")
    assert folder == tmp_path / "suites" / "9.9.9" and (folder / "SOURCE").read_text().startswith(archive.name)
    imported = subprocess.run([sys.executable, "-c", "import transformers_tests.test_modeling_common as m, "
                               "transformers_tests.test_configuration_common as c; print(m.ModelTesterMixin, "
                               "c.config_common_kwargs)"], cwd=folder, capture_output=True, text=True)  # fmt: skip
    assert imported.returncode == 0 and "{}" in imported.stdout, imported.stderr

    def offline(version, into):
        raise RuntimeError("No matching distribution found for transformers==9.9.8")

    monkeypatch.setattr(fetch, "download_sdist", offline)
    fetch.main(["--version", "9.9.8"])  # exits normally: the test module then skips, saying why
    assert "were not fetched (No matching distribution" in capsys.readouterr().out
    assert not (tmp_path / "suites" / "9.9.8").exists()
