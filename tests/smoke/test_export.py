"""Models out: a trained tiny LoRA run exported as a standalone Hugging Face folder.

The merged export is loaded in a fresh Python process with transformers alone (no langrl, no peft
imported) and must give the logits of the trained policy as langrl loads it; the adapter export loads with
peft against the base model's folder; a full fine-tune exports too. Pushing to the Hub is followed up to the
upload call, with HfApi's two methods replaced (no network).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from langrl.errors import ConfigError
from langrl.export import export_run

PROMPT = [{"role": "user", "content": "Say hello"}]
# Run in a fresh interpreter: load the export with transformers only, generate, report what got imported.
LOAD_WITH_TRANSFORMERS_ONLY = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

folder, messages = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
with torch.no_grad():
    logits = model(**inputs).logits[0, -1]
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
print(json.dumps({"logits": logits.tolist(), "new_tokens": output[0, inputs["input_ids"].shape[1]:].tolist(),
                  "imported": sorted({m.split(".")[0] for m in sys.modules} & {"langrl", "peft"})}))
"""


def tiny_lora_config() -> dict[str, Any]:
    return {"model": "tiny", "algorithm": "grpo", "steps": 2,
            "prompts": {"items": ["hello", "world", "abc"], "template": "Say {item}", "per_step": 2,
                        "eval_count": 1},
            "sampling": {"max_new_tokens": 6, "group_size": 2},
            "reward": {"type": "length", "target": 4, "unit": "chars"},
            "optim": {"lr": 1e-2}, "lora": {"r": 4, "alpha": 8},
            "log": {"checkpoint_every": 2, "progress": False, "report_to": []}}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step GRPO run of the tiny model with LoRA (trained once for this module)."""
    from langrl.api import train

    return train(tiny_lora_config(), output=tmp_path_factory.mktemp("export") / "grpo-lora").run_dir


def last_logits(model: Any, tokenizer: Any) -> torch.Tensor:
    inputs = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        return model(**inputs).logits[0, -1]


def trained_policy_logits(run: Path) -> torch.Tensor:
    """The policy as langrl loads the run's checkpoint (base + adapter, merged by peft)."""
    from langrl.models import load_lm

    lm = load_lm(str(run / "checkpoints" / "step-2"), device="cpu")
    return last_logits(lm.model, lm.tokenizer)


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    data = yaml.safe_load(card.split("---\n")[1])
    assert isinstance(data, dict)
    return data


def test_merged_export_loads_with_transformers_alone_and_is_the_folder_pushed(
        lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", {
        "repo_id": repo_id, **kw})))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    out = tmp_path / "exported"
    assert export_run(lora_run, out, merge_lora=True, push_to_hub="someone/tiny-grpo", private=True) == out

    assert [name for name, _ in calls] == ["create", "upload"]
    assert calls[0][1]["repo_id"] == "someone/tiny-grpo" and calls[0][1]["private"] is True
    assert calls[1][1]["repo_id"] == "someone/tiny-grpo" and Path(calls[1][1]["folder_path"]) == out
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md",
            "report.png"} <= files
    assert not files & {"adapter_config.json", "optimizer.pt", "rng.pt", "trainer_state.json", "COMPLETE"}
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and {"langrl", "reinforcement-learning"} <= set(meta["tags"])
    assert "base_model" not in meta  # the tiny model is on no hub
    assert "someone/tiny-grpo" in card and "| steps logged | 2 |" in card and "![" in card

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_TRANSFORMERS_ONLY, calls[1][1]["folder_path"],
                           json.dumps(PROMPT)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["imported"] == []
    assert 1 <= len(loaded["new_tokens"]) <= 4
    torch.testing.assert_close(torch.tensor(loaded["logits"]), trained_policy_logits(lora_run),
                               rtol=1e-5, atol=1e-5)


def test_adapter_export_records_a_portable_base_and_loads_with_peft(lora_run: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langrl.models import tiny_lm

    out = export_run(lora_run, tmp_path / "adapter")
    # The base as the run's config names it (the checkpoint itself records none for an in-process model).
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    files = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= files
    assert "model.safetensors" not in files and "optimizer.pt" not in files
    assert front_matter((out / "README.md").read_text())["library_name"] == "peft"

    base_folder = tmp_path / "base"
    tiny_lm(seed=0).model.save_pretrained(base_folder)  # the run's base: model tiny, seed 0
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_folder), out)
    logits = last_logits(model, AutoTokenizer.from_pretrained(out))
    torch.testing.assert_close(logits, trained_policy_logits(lora_run), rtol=1e-5, atol=1e-5)


def test_lora_checkpoints_of_the_embedded_model_record_its_hub_id(tmp_path: Path) -> None:
    """The embedded model's adapters name its hub id as their base, not this machine's cache folder, and load
    back onto the embedded model without a hub. A tiny model stands in for it in this test's cache."""
    from langrl.models import apply_lora, load_lm, tiny_lm
    from langrl.models.loading import cache_dir

    stand_in = tiny_lm(seed=1)
    stand_in.model.save_pretrained(cache_dir() / "smollm2-135m-instruct")
    stand_in.tokenizer.save_pretrained(cache_dir() / "smollm2-135m-instruct")
    lm = load_lm("smollm2-135m-instruct", device="cpu")
    policy = apply_lora(lm.model, 4, 8, 0.0, "all-linear")
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)  # an adapter that changes the model
    adapter = tmp_path / "adapter"
    policy.save_pretrained(adapter)
    lm.tokenizer.save_pretrained(adapter)
    recorded = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert recorded == "HuggingFaceTB/SmolLM2-135M-Instruct"
    again = load_lm(str(adapter), device="cpu")  # the hub id is read as the embedded model: no hub needed
    torch.testing.assert_close(last_logits(again.model, again.tokenizer), last_logits(policy, lm.tokenizer))


def test_an_embedded_base_is_recorded_by_its_hub_id(lora_run: Path, tmp_path: Path) -> None:
    """A run on the embedded model (here: the tiny run's files under a config naming it; the adapter is not
    loaded) exports an adapter whose base is the hub id, never the local cache folder."""
    import shutil

    run = tmp_path / "embedded-run"
    shutil.copytree(lora_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "model": "smollm2-135m-instruct"}))
    out = export_run(run / "checkpoints" / "step-2", tmp_path / "adapter")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    card = (out / "README.md").read_text()
    assert front_matter(card)["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "close but not identical" in card  # the adapter was trained on the GGUF build


def test_a_full_fine_tune_exports_plain_weights(tmp_path: Path) -> None:
    """A run without LoRA (its checkpoint written as the harness writes one) exports model and tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langrl.models import tiny_lm
    from langrl.run.checkpoint import save_checkpoint

    run, lm = tmp_path / "full-run", tiny_lm(seed=3)
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(1.5)  # a change the export must carry
    save_checkpoint(run, 5, lm.model, lm.tokenizer, None, {}, keep=1)
    (run / "config.yaml").write_text(yaml.safe_dump({"kind": "lm", "model": "tiny", "algorithm": "rloo"}))
    (run / "metrics.jsonl").write_text('{"step": 5, "reward/mean": 0.5, "kl/ref": 0.01}\n')
    out = export_run(run, tmp_path / "out")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == lm.tokenizer.chat_template
    torch.testing.assert_close(last_logits(model, tokenizer), last_logits(lm.model, lm.tokenizer))
    card = (out / "README.md").read_text()
    assert "checkpoint of step 5" in card and "| kl/ref (nats), final | 0.01 |" in card
    assert not (out / "optimizer.pt").exists() and not (out / "rng.pt").exists()


def test_bad_sources_and_outputs_are_one_line_errors(lora_run: Path, tmp_path: Path) -> None:
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "todo.txt").write_text("x")
    no_checkpoint = tmp_path / "crashed-run"
    no_checkpoint.mkdir()
    (no_checkpoint / "metrics.jsonl").write_text('{"step": 1}\n')
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    cases = [
        (tmp_path / "missing", tmp_path / "o1", "does not exist"),
        (not_a_run, tmp_path / "o2", "neither a langrl run"),
        (no_checkpoint, tmp_path / "o3", "no intact checkpoint"),
        (lora_run, full, "is not empty"),
        (lora_run, full / "keep.txt", "is a file"),
    ]
    for source, out, problem in cases:
        with pytest.raises(ConfigError) as error:
            export_run(source, out)
        message = str(error.value)
        assert "\n" not in message and problem in message, message
        named = out if problem in ("is not empty", "is a file") else source
        assert str(named) in message, message
    assert (full / "keep.txt").read_text() == "mine" and not (tmp_path / "o3").exists()
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        export_run(lora_run, tmp_path / "o4", push_to_hub="no spaces/allowed here")
    assert not (tmp_path / "o4").exists()


def test_the_cli_exports_a_run(lora_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from langrl.cli import main

    assert main(["export", str(lora_run), str(tmp_path / "out"), "--merge-lora"]) == 0
    assert (tmp_path / "out" / "README.md").exists() and str(tmp_path / "out") in capsys.readouterr().out
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "out2")]) == 2
    assert "error:" in capsys.readouterr().err
