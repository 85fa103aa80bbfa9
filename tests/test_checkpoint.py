import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import random_batch, tiny_model
from safetensors import safe_open
from transformers import AutoModelForSeq2SeqLM

import vaswani


@pytest.mark.parametrize(
    "overrides", [{}, {"tie_word_embeddings": False, "pre_layer_norm": True}, {"position_embedding_type": "learned"}]
)
def test_round_trip_is_lossless(tmp_path, overrides):
    model = tiny_model(**overrides)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert isinstance(loaded, vaswani.VaswaniForConditionalGeneration)
    input_ids, attention_mask = random_batch()
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :5])
    assert torch.equal(model(**kwargs).logits, loaded(**kwargs).logits)
    assert loaded.model.encoder.embed_tokens.weight is loaded.model.shared.weight
    assert (loaded.lm_head.weight is loaded.model.shared.weight) == loaded.config.tie_word_embeddings
    if loaded.config.position_embedding_type == "sinusoidal":  # non-persistent buffer rebuilt after meta loading
        for stack in (loaded.model.encoder, loaded.model.decoder):
            assert torch.equal(stack.embed_positions.table, model.model.encoder.embed_positions.table)
    assert loaded.generation_config.num_beams in (None, 1)  # built from a config: greedy, as saved


def test_a_checkpoint_with_the_papers_decoding_keeps_it(tmp_path):
    """What the training job saves, and what every checkpoint saved before vaswani 0.6 carries (their models were
    built with it): `generate()` without arguments decodes with beam 4 and length penalty 0.6."""
    model = tiny_model()
    model.generation_config = vaswani.paper_generation_config(model.generation_config)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert (saved["num_beams"], saved["length_penalty"]) == (4, 0.6)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    input_ids, attention_mask = random_batch()
    paper = loaded.generate(input_ids, attention_mask=attention_mask, num_beams=4, length_penalty=0.6)
    assert torch.equal(loaded.generate(input_ids, attention_mask=attention_mask), paper)
    assert not torch.equal(loaded.generate(input_ids, attention_mask=attention_mask, num_beams=1), paper)


def test_checkpoint_is_self_contained(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "generation_config.json", "model.safetensors"} <= files
    assert {"configuration_vaswani.py", "modeling_vaswani.py", "checkpoint_vaswani.py", "compat_vaswani.py",
            "kernels_vaswani.py"} <= files  # fmt: skip
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_vaswani.VaswaniConfig",
        "AutoModel": "modeling_vaswani.VaswaniModel",
        "AutoModelForSeq2SeqLM": "modeling_vaswani.VaswaniForConditionalGeneration",
        "AutoModelForCausalLM": "modeling_vaswani.VaswaniForCausalLM",
        "AutoModelForMaskedLM": "modeling_vaswani.VaswaniForMaskedLM",
        "AutoModelForSequenceClassification": "modeling_vaswani.VaswaniForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_vaswani.VaswaniForTokenClassification",
    }
    assert "pipeline_vaswani.py" in files  # named by custom_pipelines: transformers 5 lacks both tasks
    for task in ("translation", "text2text-generation"):
        assert config["custom_pipelines"][task]["impl"] == "pipeline_vaswani.VaswaniTranslationPipeline"
    with safe_open(tmp_path / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    # Tied weights are stored once; the sinusoid table is not stored at all.
    assert "model.shared.weight" in keys and "lm_head.weight" not in keys
    assert not any("embed_positions" in key for key in keys)


REMOTE_LOAD = textwrap.dedent(
    """
    import sys
    sys.modules["vaswani"] = None  # as on a machine without the plugin: `import vaswani` raises ImportError
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
    folder = sys.argv[1]
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__ == "VaswaniModel"
    assert type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__ == "VaswaniConfig"
    data = torch.load(folder + "/inputs.pt")
    logits = model(**data).logits
    assert torch.equal(logits, data_logits := torch.load(folder + "/logits.pt")), (logits - data_logits).abs().max()
    # The checkpoint's own copy of the decoding check, on the transformers installed here.
    compat = sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".compat_vaswani"]
    compat.check_cached_decoding(model, data["input_ids"], data["attention_mask"])
    expected = torch.load(folder + "/tokens.pt")
    for n in (1, 4):  # greedy and beam: the tokens the installed plugin generated
        out = model.generate(data["input_ids"], attention_mask=data["attention_mask"], num_beams=n, max_new_tokens=10)
        assert out.tolist() == expected[n], (n, out.tolist(), expected[n])
    model.save_pretrained(folder + "/resaved")  # remote code saves a self-contained checkpoint too
    print("REMOTE-OK", out.shape[0])
    """
)


def test_fresh_process_loads_with_trust_remote_code_without_vaswani(tmp_path):
    model = tiny_model(pre_layer_norm=True)
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    input_ids, attention_mask = random_batch()
    data = dict(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=input_ids[:, :4])
    torch.save(data, folder / "inputs.pt")
    torch.save(model(**data).logits, folder / "logits.pt")
    generate = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=10)
    torch.save({n: model.generate(**generate, num_beams=n).tolist() for n in (1, 4)}, folder / "tokens.pt")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", REMOTE_LOAD, str(folder)], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REMOTE-OK 3" in result.stdout
    code = {
        "modeling_vaswani.py",
        "configuration_vaswani.py",
        "checkpoint_vaswani.py",
        "compat_vaswani.py",
        "kernels_vaswani.py",
        "pipeline_vaswani.py",
    }
    assert code <= set(os.listdir(folder / "resaved"))


def test_plugin_not_importable_in_the_subprocess(tmp_path):
    """The remote-code test above is only a proof if the plugin really cannot be imported there."""
    code = 'import sys; sys.modules["vaswani"] = None\ntry:\n import vaswani\nexcept ImportError:\n print("BLOCKED")'
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert "BLOCKED" in result.stdout
