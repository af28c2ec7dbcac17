"""Bad inputs get one clear error line (exit 2 from the CLI), never a traceback, NaNs or a silent result."""

import json
import threading
import time

import pytest
import torch
import yaml

from langrl.cli import main
from langrl.envs.prompts import encode
from langrl.errors import ConfigError, RewardError
from langrl.models.loading import resolve_device
from langrl.rewards import PythonReward, build_reward, score
from langrl.rollout import filter_logits


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one ``langrl <cmd>: error: ...`` line; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("langrl ")]
    assert len(lines) == 1 and lines[0].startswith(f"langrl {argv[0]}: error: "), err
    return lines[0]


def write_config(tmp_path, data, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def lm_data(**extra):
    return {"model": "tiny", "prompts": {"items": ["a", "b"], "per_step": 2},
            "sampling": {"max_new_tokens": 2, "group_size": 2}, "reward": {"type": "length", "target": 4},
            **extra}


def generated(capsys, argv):
    assert main(["generate", "--model", "tiny", "--prompt", "hi", "--max-new-tokens", "6", *argv]) == 0
    return [json.loads(line)["completion"] for line in capsys.readouterr().out.splitlines()]


# 1. temperature 0 / top-p 0: greedy decoding, not NaN probabilities


def test_top_p_zero_keeps_exactly_the_top_token():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    kept = torch.isfinite(filter_logits(logits, top_k=0, top_p=0.0))
    assert kept.tolist() == [[False, True, False], [True, False, False]]
    probs = filter_logits(logits, top_k=0, top_p=0.0).softmax(-1)
    assert torch.isfinite(probs).all()


def test_generate_temperature_zero_is_greedy(capsys, tiny):
    greedy = generated(capsys, ["--temperature", "0", "--n", "2", "--seed", "1"])
    assert greedy[0] == greedy[1] == generated(capsys, ["--temperature", "0", "--seed", "7"])[0]
    assert generated(capsys, ["--top-p", "0", "--seed", "3"])[0] == greedy[0]
    # The same completion as argmax decoding by hand (tiny is load_lm("tiny")'s model: seed 0).
    ids = torch.tensor(encode(["hi"], tiny.tokenizer, chat=True))
    with torch.no_grad():
        for _ in range(6):
            token = tiny.model(input_ids=ids).logits[0, -1].argmax()
            if token == tiny.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
    prompt_length = len(encode(["hi"], tiny.tokenizer, chat=True)[0])
    assert greedy[0] == tiny.tokenizer.decode(ids[0, prompt_length:].tolist())


@pytest.mark.parametrize("flag, value, expected", [
    ("--temperature", "-1", "--temperature = -1.0: must be a finite number >= 0"),
    ("--temperature", "nan", "--temperature = nan"),
    ("--top-p", "1.5", "--top-p = 1.5: must be in [0, 1]"),
    ("--top-k", "-1", "--top-k = -1: must be >= 0"),
    # 2. sizes
    ("--max-new-tokens", "0", "--max-new-tokens = 0: must be at least 1"),
    ("--n", "0", "--n = 0: completions per prompt must be at least 1"),
    ("--n", "-2", "--n = -2: completions per prompt must be at least 1"),
])
def test_generate_rejects_bad_sampling_flags(capsys, flag, value, expected):
    line = cli_error(capsys, ["generate", "--model", "tiny", "--prompt", "hi", flag, value])
    assert expected in line


def test_generate_rejects_a_prompt_without_tokens(capsys):
    line = cli_error(capsys, ["generate", "--model", "tiny", "--prompt", "", "--no-chat"])
    assert "--prompt '' encodes to no tokens" in line


# 3. eval sizes


def test_eval_rejects_zero_prompts(tmp_path, capsys):
    line = cli_error(capsys, ["eval", write_config(tmp_path, lm_data()), "--model", "tiny", "--num-prompts", "0"])
    assert "num_prompts (--num-prompts) = 0: evaluate at least 1 prompt" in line


def test_eval_rejects_zero_agent_episodes(tmp_path, capsys):
    config = write_config(tmp_path, {"model": "tiny", "env": {"id": "langrl/BabyAI-GoToLocal-Text-v0"}})
    line = cli_error(capsys, ["eval", config, "--model", "tiny", "--episodes", "0"])
    assert "episodes (--episodes) = 0: evaluate at least 1 episode" in line
    line = cli_error(capsys, ["eval", config, "--model", "tiny", "--set", "eval.episodes=0"])
    assert "eval.episodes = 0: evaluating needs at least 1 episode" in line and "--episodes N" in line


# 4. a binary prompts file


def test_binary_prompts_file_names_the_file(tmp_path, capsys):
    binary = tmp_path / "prompts.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81binary\n")
    data = lm_data(prompts={"file": str(binary), "per_step": 2})
    line = cli_error(capsys, ["eval", write_config(tmp_path, data), "--model", "tiny"])
    assert f"prompts.file = {str(binary)!r}" in line and "is not UTF-8 text (byte 0xff at offset 0)" in line

    from langrl.config import PromptsConfig
    from langrl.envs.prompts import read_items

    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"hello\x00world\n")
    with pytest.raises(ConfigError, match="holds NUL bytes, so it is binary"):
        read_items(PromptsConfig(file=str(nul)))
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffhello\nworld\n".encode())
    assert read_items(PromptsConfig(file=str(bom))) == ["hello", "world"]


# 5. devices this machine lacks


def test_unavailable_or_unknown_device(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = cli_error(capsys, ["eval", write_config(tmp_path, lm_data(device="cuda")), "--model", "tiny"])
    assert "device = 'cuda': CUDA is not available" in line and "use device: auto or cpu" in line
    with pytest.raises(ConfigError, match=r"device = 'cuda:1': CUDA is not available"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match=r"device = 'gpu' is not a torch device; use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"device = 'cuda:2': this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")


# 6. a folder without a model


def test_folder_without_a_model(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = cli_error(capsys, ["generate", "--model", str(empty), "--prompt", "hi"])
    assert f"folder {str(empty)!r} holds no Hugging Face model (config.json and weights" in line
    assert "save_pretrained" in line and "sentencepiece" not in line
    (empty / "config.json").write_text("{}")
    line = cli_error(capsys, ["generate", "--model", str(empty), "--prompt", "hi"])
    assert "(weights (model.safetensors or pytorch_model.bin) missing)" in line
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    line = cli_error(capsys, ["generate", "--model", str(run), "--prompt", "hi"])
    assert "looks like a run folder" in line and "checkpoints/step-N" in line


# 7. rewards that return something other than a sequence


@pytest.mark.parametrize("result, kind", [
    ({0.5: 1.0, 1.5: 2.0}, "dict"), ({0.5, 1.5}, "set"), ("ab", "str"), ((x for x in [1.0, 2.0]), "generator"),
])
def test_reward_must_return_a_sequence(result, kind):
    reward = PythonReward(lambda prompts, completions: result, name="mine")
    with pytest.raises(RewardError, match=rf"reward 'mine' returned a {kind} .*expected a list of 2 floats"):
        score(reward, ["p", "q"], ["a", "b"])


def test_reward_sequences_and_arrays_still_pass():
    import numpy as np

    for result in ([1.0, 2.0], (1.0, 2.0), np.array([1.0, 2.0]), torch.tensor([1.0, 2.0])):
        assert score(PythonReward(lambda p, c, r=result: r), ["p", "q"], ["a", "b"]) == [1.0, 2.0]


# 8. rewards that never return


def test_reward_timeout_names_the_reward_and_how_to_raise_it():
    release = threading.Event()

    def stuck(prompts, completions):
        release.wait(10)
        return [0.0] * len(completions)

    reward = PythonReward(stuck, name="stuck", timeout_s=0.2)
    t0 = time.perf_counter()
    try:
        with pytest.raises(RewardError, match=r"reward 'stuck' did not return within timeout_s = 0.2 s .*"
                                              r"raise timeout_s in its reward config.*timeout_s: null"):
            score(reward, ["p"], ["a"])
    finally:
        release.set()
    assert time.perf_counter() - t0 < 5


def test_reward_timeout_config_and_errors_pass_through():
    default = build_reward({"type": "python", "function": "math:fsum"})
    unlimited = build_reward({"type": "python", "function": "math:fsum", "timeout_s": None})
    assert isinstance(default, PythonReward) and isinstance(unlimited, PythonReward)
    assert default.timeout_s == 60.0 and unlimited.timeout_s is None
    with pytest.raises(ConfigError, match=r"reward.timeout_s: Input should be greater than 0 \(got 0\)"):
        build_reward({"type": "python", "function": "math:fsum", "timeout_s": 0})

    def broken(prompts, completions):
        raise KeyError("oops")

    with pytest.raises(RewardError, match=r"reward 'broken' raised KeyError: 'oops'") as info:
        score(PythonReward(broken, name="broken"), ["p"], ["a"])
    assert isinstance(info.value.__cause__, KeyError)
