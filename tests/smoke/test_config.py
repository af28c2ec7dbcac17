"""Config errors name the field, the bad value and what is allowed."""

from pathlib import Path

import pytest

from langrl.config import load_config, set_override
from langrl.errors import ConfigError

BASE = {
    "model": "tiny",
    "prompts": {"items": ["a", "b"]},
    "reward": {"type": "vader"},
}


def test_defaults_and_overrides():
    cfg = load_config(BASE, ["steps=3", "kl.coef=0.2", "sampling.top_p=0.9", "lora.r=4"])
    assert cfg.steps == 3 and isinstance(cfg.steps, int)
    assert cfg.kl.coef == 0.2 and cfg.sampling.top_p == 0.9
    assert cfg.lora is not None and cfg.lora.r == 4
    assert cfg.algorithm == "grpo"


def test_bad_algorithm_names_field_value_and_choices():
    with pytest.raises(ConfigError) as e:
        load_config(BASE, ["algorithm=gpro"])
    msg = str(e.value)
    assert "algorithm" in msg and "'gpro'" in msg and "grpo" in msg and "rloo" in msg


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"kl\.cof: unknown field; did you mean 'coef'"):
        load_config(BASE, ["kl.cof=0.1"])
    with pytest.raises(ConfigError, match="stpes: unknown field; did you mean 'steps'"):
        load_config(BASE, ["stpes=3"])


def test_out_of_range_value():
    with pytest.raises(ConfigError, match=r"steps = 0: .*greater than or equal to 1"):
        load_config(BASE, ["steps=0"])
    with pytest.raises(ConfigError, match=r"sampling\.temperature = -1"):
        load_config(BASE, ["sampling.temperature=-1"])


def test_missing_required_sections():
    with pytest.raises(ConfigError, match="prompts: required field is missing"):
        load_config({"reward": {"type": "vader"}})


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="group_size >= 2"):
        load_config(BASE, ["algorithm=rloo", "sampling.group_size=1"])
    with pytest.raises(ConfigError, match="needs a lora section"):
        load_config(BASE, ["kl.reference=adapter"])
    with pytest.raises(ConfigError, match="exactly one of prompts.file or prompts.items"):
        load_config({**BASE, "prompts": {}})


def test_bad_reward_type_lists_types():
    with pytest.raises(ConfigError, match="allowed types: vader, length"):
        load_config({**BASE, "reward": {"type": "sentiment"}})


def test_set_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        set_override({}, "steps")
    with pytest.raises(ConfigError, match="not a section"):
        set_override({"steps": 3}, "steps.x=1")


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_shipped_demo_config_is_valid():
    cfg = load_config("configs/positive_sentiment.yaml")
    assert cfg.algorithm == "grpo" and cfg.model == "smollm2-135m-instruct"


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    from langrl.config import load_any_config

    assert load_any_config(str(path)).kind
