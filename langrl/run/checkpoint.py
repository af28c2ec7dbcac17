"""Checkpoints: ``checkpoints/step-N/`` holds the policy in Hugging Face format (the LoRA adapter when
there is one), the tokenizer, the optimizer state, the RNG, extra modules and objects, and the trainer
state.

A checkpoint is built in a temporary folder that is renamed into place (`langrl.run.io.atomic_dir`). Its
last file is ``COMPLETE``: the size and SHA-256 of every other file. Only a folder with a ``COMPLETE``
that matches its files is a checkpoint: deleting one removes ``COMPLETE`` first, and loading verifies
every file, so a half-deleted or corrupted checkpoint is never loaded; the newest intact one is.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from langrl.errors import CheckpointError
from langrl.run.io import atomic_dir

STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "COMPLETE"


def save_checkpoint(run_dir: Path, step: int, model: PreTrainedModel | None,
                    tokenizer: PreTrainedTokenizerBase | None, optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], keep: int,
                    modules: dict[str, nn.Module] | None = None, objects: dict[str, Any] | None = None) -> Path:
    """Write ``checkpoints/step-{step}`` atomically, then drop all but the ``keep`` newest.

    ``modules`` (an algorithm's value head, critic or proposal) go to ``<name>.safetensors``; ``objects``
    (state that is not tensors, such as the environments of an agent run mid-episode) to ``<name>.pkl``.
    A run without an LM (a Q-table, a DQN's network in ``modules``) passes ``model`` and ``tokenizer`` None;
    one without an optimizer passes ``optimizer`` None.
    """
    final = run_dir / "checkpoints" / f"step-{step}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        if model is not None and hasattr(model, "peft_config"):
            # the adapter only; without this PEFT asks the Hub about the base on every save
            model.save_pretrained(tmp, save_embedding_layers=False)
        elif model is not None:
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(torch.get_rng_state(), tmp / "rng.pt")
        for name, module in (modules or {}).items():
            save_model(module, str(tmp / f"{name}.safetensors"))
        for name, obj in (objects or {}).items():
            with open(tmp / f"{name}.pkl", "wb") as f:
                pickle.dump(obj, f)
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **state}, indent=2))
        write_manifest(tmp, step)
    for old in list_checkpoints(run_dir)[:-keep]:
        remove_checkpoint(old)
    return final


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, step: int) -> None:
    """``COMPLETE``: every file's size and SHA-256; written last, so its presence means the rest is there."""
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1))


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint, ``COMPLETE`` first: an interrupted deletion leaves an incomplete folder."""
    (path / MANIFEST).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints with a ``COMPLETE`` file, oldest first (temporary and half-deleted folders are not)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / MANIFEST).exists()]


def newest_checkpoint(model: str) -> str:
    """A run folder -> its newest intact checkpoint; anything else (a checkpoint, a model name) as it is."""
    found = list_checkpoints(Path(model)) if Path(model).is_dir() else []
    return str(found[-1]) if found else model


def clean_stale(run_dir: Path) -> list[Path]:
    """Remove what crashed writers left in ``checkpoints/``: temporary folders (``.tmp-*``, ``.old-*``)
    and step folders without ``COMPLETE``. Call it only while holding the run's lock."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    stale = [p for p in folder.iterdir() if p.name.startswith((".tmp-", ".old-"))
             or (STEP_DIR.match(p.name) and not (p / MANIFEST).exists())]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return stale


def verify_checkpoint(path: Path) -> None:
    """Check every file against ``COMPLETE`` (present, same size, same SHA-256); raise naming the first
    bad file."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {MANIFEST} is unreadable ({e})") from None
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint file {file} is missing")
        if file.stat().st_size != expected["size"] or file_digest(file) != expected["sha256"]:
            raise CheckpointError(f"checkpoint file {file} is corrupt (its size or SHA-256 differs from "
                                  f"what was written)")


def finite_tensors(tensors: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    """``tensors``, after checking every floating-point one is finite."""
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"checkpoint file {file} holds non-finite weights ({key}); the run diverged "
                                  f"before this checkpoint: resume from an earlier one or lower optim.lr")
    return tensors


def load_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return finite_tensors(load_file(str(file)), file)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"checkpoint file {file} cannot be read ({type(e).__name__}: {e})") from None


def load_torch(file: Path) -> Any:
    try:
        return torch.load(file, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint file {file} cannot be read ({type(e).__name__}: {e})") from None


def load_objects(path: Path, names: list[str]) -> dict[str, Any]:
    """The pickled ``objects`` a checkpoint holds (only the run's own files are read: a pickle is code)."""
    out = {}
    for name in names:
        file = path / f"{name}.pkl"
        try:
            with open(file, "rb") as f:
                out[name] = pickle.load(f)  # noqa: S301 - written by save_checkpoint of this run
        except Exception as e:
            raise CheckpointError(f"checkpoint file {file} cannot be read ({type(e).__name__}: {e})") from None
    return out


def load_checkpoint(path: Path, model: PreTrainedModel | None, optimizer: torch.optim.Optimizer | None,
                    modules: dict[str, nn.Module] | None = None) -> dict[str, Any]:
    """Verify ``path`` (every file, and finite weights), then restore the trainable weights, extra modules,
    optimizer and RNG; return the trainer state. Nothing is changed when a file is bad."""
    verify_checkpoint(path)
    adapter = path / "adapter_model.safetensors"
    weights = None if model is None else load_tensors(adapter if adapter.exists() else path / "model.safetensors")
    for name in modules or {}:
        load_tensors(path / f"{name}.safetensors")  # readable and finite before anything is changed
    optimizer_state = None if optimizer is None else load_torch(path / "optimizer.pt")
    rng = load_torch(path / "rng.pt")
    if model is not None and weights is not None:
        load_model_weights(path, model, weights, adapter.exists())
    for name, module in (modules or {}).items():
        load_model(module, str(path / f"{name}.safetensors"))  # re-ties shared weights save_model stored once
    if optimizer is not None and optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(rng)
    state: dict[str, Any] = json.loads((path / "trainer_state.json").read_text())
    return state


def load_model_weights(path: Path, model: PreTrainedModel, weights: dict[str, torch.Tensor], adapter: bool) -> None:
    """The policy's weights (or its LoRA adapter's) into ``model``."""
    if adapter:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, weights)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        # Tied weights (lm_head = embed_tokens) are saved once; anything else missing is an error.
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise CheckpointError(f"checkpoint {path} does not match the model: missing {missing}, "
                                  f"unexpected {unexpected}")


def finite_parameters(params: list[nn.Parameter]) -> bool:
    """Whether every parameter is finite (one reduction per tensor)."""
    return all(math.isfinite(float(p.detach().float().abs().sum())) for p in params) if params else True


def module_checkpoint(model: str, file: str, label: str) -> Path:
    """A run folder -> its newest checkpoint; a checkpoint folder holding ``file`` as it is (runs whose
    network is a module, not an LM: ``label`` names their kind in the error)."""
    from langrl.errors import ConfigError

    path = Path(model)
    found = list_checkpoints(path) if path.is_dir() else []
    if found:
        path = found[-1]
    if not (path / file).is_file():
        raise ConfigError(f"model = {model!r}: not a {label} run folder or checkpoint (a folder holding {file}); "
                          f"pass the run's output folder or one of its checkpoints/step-N")
    return path


def trained_config(checkpoint: Path, cfg: Any, kind: str) -> Any:
    """The config ``checkpoint`` was trained with (its run's ``config.yaml``, which must be of ``kind``), with
    ``cfg``'s ``eval`` section; ``cfg`` itself when the run folder has no config."""
    from langrl.config import KINDS, read_config_data
    from langrl.errors import ConfigError

    saved = checkpoint.parent.parent / "config.yaml"
    if not saved.is_file():
        return cfg
    data, base = read_config_data(saved)
    if data.get("kind") != kind:
        raise ConfigError(f"model = {str(checkpoint)!r}: its run is kind {data.get('kind')!r}, not {kind}; "
                          f"evaluate it with its own config")
    return KINDS[kind].function("config")(data, base).model_copy(update={"eval": cfg.eval})
