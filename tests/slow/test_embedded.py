"""Tier 4 (slow): the embedded SmolLM2-135M-Instruct, converted from its GGUF and cached."""

import math
import time

import pytest

import langrl
from langrl.run.io import read_jsonl

pytestmark = pytest.mark.slow


def test_embedded_model_converts_once_then_loads_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("LANGRL_CACHE", str(tmp_path / "cache"))
    lm = langrl.load_lm("smollm2-135m-instruct")
    assert (tmp_path / "cache" / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert lm.tokenizer.chat_template and lm.model.config.vocab_size == 49152
    start = time.perf_counter()
    again = langrl.load_lm("smollm2-135m-instruct")
    assert time.perf_counter() - start < 15
    assert again.model.config.num_hidden_layers == 30


def test_demo_config_runs_two_steps(tmp_path):
    result = langrl.train("configs/positive_sentiment.yaml", output=tmp_path / "run",
                          overrides=["steps=2", "log.progress=false", "prompts.eval_count=2"])
    rows = read_jsonl(result.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(math.isfinite(r["kl/ref"]) for r in rows)
