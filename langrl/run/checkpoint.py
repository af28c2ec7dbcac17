"""Checkpoints: ``checkpoints/step-N/`` holds the policy in Hugging Face format (the LoRA adapter when
there is one), the tokenizer, the optimizer state and the trainer state. Each is written into a temporary
folder that is renamed into place, so a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.run.io import atomic_dir

STEP_DIR = re.compile(r"^step-(\d+)$")


def save_checkpoint(run_dir: Path, step: int, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    optimizer: torch.optim.Optimizer, state: dict[str, Any], keep: int,
                    modules: dict[str, nn.Module] | None = None, objects: dict[str, Any] | None = None) -> Path:
    """Write ``checkpoints/step-{step}`` atomically, then drop all but the ``keep`` newest.

    ``modules`` (an algorithm's value head, critic or proposal) go to ``<name>.safetensors``; ``objects``
    (state that is not tensors, such as the environments of an agent run mid-episode) to ``<name>.pkl``.
    """
    final = run_dir / "checkpoints" / f"step-{step}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        for name, module in (modules or {}).items():
            save_model(module, str(tmp / f"{name}.safetensors"))
        for name, obj in (objects or {}).items():
            with open(tmp / f"{name}.pkl", "wb") as f:
                pickle.dump(obj, f)
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders from a crash are ignored)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").exists()]


def load_objects(path: Path, names: list[str]) -> dict[str, Any]:
    """The pickled ``objects`` a checkpoint holds (only the run's own files are read: a pickle is code)."""
    out = {}
    for name in names:
        with open(path / f"{name}.pkl", "rb") as f:
            out[name] = pickle.load(f)  # noqa: S301 - written by save_checkpoint of this run
    return out


def load_checkpoint(path: Path, model: PreTrainedModel, optimizer: torch.optim.Optimizer,
                    modules: dict[str, nn.Module] | None = None) -> dict[str, Any]:
    """Restore the trainable weights, extra modules, optimizer and RNG from ``path``; return the trainer
    state."""
    weights = path / "adapter_model.safetensors"
    if weights.exists():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(weights)))
    else:
        state = load_file(str(path / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Tied weights (lm_head = embed_tokens) are saved once; anything else missing is an error.
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"checkpoint {path} does not match the model: missing {missing}, "
                               f"unexpected {unexpected}")
    for name, module in (modules or {}).items():
        load_model(module, str(path / f"{name}.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True))
    return json.loads((path / "trainer_state.json").read_text())
