"""What every kind of run's config shares: strict sections, the run essentials, LoRA, the optimizer, the
KL reference, logging, ``--set`` overrides and one-line error messages.

Every error names the field (dotted path), the bad value, and what is allowed. ``--set a.b=value``
overrides reach every key; values are parsed as YAML, so ``--set steps=3`` gives an int.

Whatever a config holds, reading and validating it either returns a config or raises `ConfigError`
(tests/smoke/test_config_fuzz.py): no float field takes inf or NaN, and a mapping that contains itself
(a YAML alias), nests deeper than :data:`MAX_DEPTH` or holds an integer beyond :data:`MAX_INT_BITS` bits
is refused before validation.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from langrl.errors import ConfigError

MAX_DEPTH = 64  # nesting levels of a config's mappings and lists
MAX_INT_BITS = 256  # no setting needs a larger integer; far larger ones cannot even be printed
MAX_LR = 1.0  # an AdamW learning rate above this is a typo (1e9 for 1e-9), never a choice


class Section(BaseModel):
    """A config section: unknown keys are errors (with a did-you-mean), never silently ignored; no float
    field takes inf or NaN."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RunConfig(Section):
    """The fields every run has. Each kind of run narrows ``kind`` (the discriminator, a key of
    `langrl.config.KINDS`) to its own literal and adds its sections."""

    kind: str = Field(description="the kind of run")

    model: str = Field("smollm2-135m-instruct", description="embedded short name, hub id, local folder, "
                                                            "or 'tiny' / 'toy' (random models built in-process)")
    seed: int = Field(0, ge=0, le=2**64 - 1, description="seeds everything random: initialisation, "
                      "sampling, prompt order, environments (each stream derived in langrl.run.seeds); "
                      "torch.manual_seed takes at most 2**64 - 1")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="model dtype")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's default")


class KLBase(Section):
    """beta * KL(pi || pi_ref) to the initial model; each kind of run adds how it is estimated."""

    coef: float = Field(0.05, ge=0, description="beta, the weight of KL(pi || pi_ref)")
    mode: Literal["reward", "loss"] = Field(
        "reward", description="reward: subtract beta * KL from the reward; loss: add beta * KL to the loss")
    reference: Literal["auto", "copy", "adapter"] = Field(
        "auto", description="copy: a frozen copy of the initial model; adapter: the LoRA network with the "
                            "adapter disabled (needs lora); auto: adapter with LoRA, else copy")


class LoraConfig(Section):
    r: int = Field(16, ge=1, description="rank")
    alpha: float = Field(32, gt=0, description="scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] | str = Field("all-linear", description="modules that get an adapter")


Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimConfig(Section):
    lr: float = Field(1e-5, gt=0, le=MAX_LR, description=f"AdamW learning rate, at most {MAX_LR}")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[Beta, Beta] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1)")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient norm clip; 0 disables")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "linear", description="learning rate after warm-up: constant, or decayed to 0 at the last step")


class LogConfig(Section):
    """How a run logs. ``metrics.jsonl`` is always written and is the source of truth; ``report_to`` names
    the trackers that also get every logged step.

    ``tensorboard`` is the older switch, kept working: ``true`` adds ``tensorboard`` to ``report_to``,
    ``false`` removes it. After validation it mirrors ``report_to`` and it is left out of ``config.yaml``,
    which keeps ``report_to`` alone (so a saved config never holds two settings that disagree).
    """

    sample_every: int = Field(10, ge=1, description="steps between rows of samples.jsonl")
    checkpoint_every: int = Field(25, ge=1, description="steps between checkpoints (the last step always)")
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        ["tensorboard"],  # pydantic copies a mutable default for each config
        description="trackers that get each logged step besides metrics.jsonl: tensorboard (tb/), wandb, mlflow "
                    "(these two need pip install 'langrl[trackers]'); [] for none")
    tensorboard: bool | None = Field(
        None, exclude=True, description="older switch: true adds tensorboard to report_to, false removes it")
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline", description="W&B mode when $WANDB_MODE is unset; offline writes the run under wandb/ in the "
                               "run folder, to upload later with `wandb sync`")
    progress: bool = Field(True, description="show a progress bar")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, value: Any) -> Any:
        """``--set log.report_to=wandb`` means ``[wandb]``."""
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fold_tensorboard(self) -> LogConfig:
        trackers = list(dict.fromkeys(self.report_to))  # drop repeats, keep the order
        if self.tensorboard is True and "tensorboard" not in trackers:
            trackers.append("tensorboard")
        elif self.tensorboard is False:
            trackers = [t for t in trackers if t != "tensorboard"]
        self.report_to = trackers
        self.tensorboard = "tensorboard" in trackers
        return self


def set_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to nested ``data`` in place; the value is parsed as YAML."""
    if not isinstance(assignment, str):
        raise ConfigError(f"--set {assignment!r}: expected a string key.sub=value, e.g. --set steps=3")
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.sub=value, e.g. --set steps=3")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment!r}: empty key in {key!r}; expected key.sub=value, "
                          "e.g. --set kl.coef=0.1")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[:i + 1])
            hint = f"; set the whole list instead: --set '{where}=[...]'" if isinstance(child, list) else ""
            raise ConfigError(f"--set {key}: {part!r} holds {show(child)}, not a section{hint}")
        node = child
    node[parts[-1]] = parse_value(key, raw) if raw.strip() else None


def parse_value(key: str, raw: str) -> Any:
    """The YAML value of ``--set key=raw``; a YAML error names the key and the value and suggests quoting."""
    try:
        return yaml.safe_load(raw)
    except Exception as e:  # PyYAML raises more than YAMLError: IndexError for `!!int _`, KeyError for `!!bool x`
        problem = getattr(e, "problem", None) or f"{type(e).__name__}: {one_line(str(e))}"
        raise ConfigError(f"--set {key}={show(raw)}: the value is not valid YAML ({problem}); to pass it as "
                          f"text, quote it: --set '{key}={json.dumps(raw)}'") from None


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for one-line messages (never raises)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a structure nested too deeply
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_structure(value: Any, path: str = "", ancestors: frozenset[int] = frozenset()) -> None:
    """Refuse what no config holds and what would crash copying, validation or printing: a mapping or
    list that contains itself (a YAML alias), nesting deeper than MAX_DEPTH, a giant integer."""
    where = path or "(top level)"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ConfigError(f"{where}: integer with {value.bit_length()} bits; at most {MAX_INT_BITS} bits")
    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return
    if id(value) in ancestors:
        raise ConfigError(f"{where}: the value contains itself (a YAML alias that refers to its own anchor)")
    if len(ancestors) >= MAX_DEPTH:
        raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    inner = ancestors | {id(value)}
    if isinstance(value, dict):
        for k, v in value.items():
            name = k[:40] if isinstance(k, str) else show(k, 40)
            step = f".{name}" if path else name
            check_structure(k, path + step, inner)  # a key is a scalar, or a tuple of scalars
            check_structure(v, path + step, inner)
    else:
        for i, v in enumerate(value):
            check_structure(v, f"{path}[{i}]", inner)


def read_config_data(source: str | Path | dict[str, Any],
                     overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], Path | None]:
    """The raw mapping of a YAML file (or a dict) with ``key=value`` overrides applied, and the file's
    folder (None for a dict)."""
    if isinstance(source, dict):
        check_structure(source)
        data, base = copy.deepcopy(source), None  # overrides must not reach into the caller's dict
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except Exception as e:  # YAMLError, and what PyYAML's constructors raise on odd tags; not UTF-8
            problem = getattr(e, "problem", None) or f"{type(e).__name__}: {one_line(str(e))}"
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {problem}{where}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, "
                              f"not {type(data).__name__}")
        base = path.parent
    else:
        raise ConfigError(f"a config is a YAML path or a mapping, not {type(source).__name__}")
    if isinstance(overrides, str):
        overrides = [overrides]
    for assignment in overrides:
        set_override(data, assignment)
    check_structure(data)
    return data, base


def validate(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """``model.model_validate(data)``, with pydantic's errors turned into one :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, model)) from None


def format_errors(error: ValidationError, root: type[BaseModel]) -> str:
    """One line per problem: ``field.path = value: what is wrong (allowed: ...)``; ``root`` is the model
    that was validated."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(unknown_field_message(loc, root))
        elif item["type"] == "missing":
            lines.append(f"{loc}: required field is missing")
        else:
            lines.append(f"{loc} = {show(item.get('input'))}: {item['msg']}")
    if len(lines) == 1:  # the usual case: one line, as every error of the command line
        return f"invalid config: {lines[0]}"
    return "invalid config:\n  " + "\n  ".join(lines)


def unknown_field_message(loc: str, root: type[BaseModel]) -> str:
    """Name the unknown key and suggest the closest allowed one."""
    *parents, name = loc.split(".")
    model: type[BaseModel] = root
    for part in parents:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        sub = next((a for a in getattr(annotation, "__args__", (annotation,))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return f"{loc}: unknown field"
        model = sub
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{loc}: unknown field{hint} (allowed: {', '.join(allowed)})"


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML (what the run folder keeps)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
