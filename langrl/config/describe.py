"""Configs that explain themselves: the resolved config with each field's description (``langrl config
show``), the JSON schema of a kind (``langrl config schema``), and the Markdown reference of every kind's
sections that docs/config.md is generated from (so the docs cannot drift from the code).
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, Union

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from langrl.config.base import RunConfig


def config_class(kind: str) -> type[RunConfig]:
    """The pydantic class of ``kind`` (a key of `langrl.config.KINDS`)."""
    from langrl.config import KINDS

    fn = KINDS[kind].function("config")
    cls = fn.__annotations__.get("return")
    module = __import__(fn.__module__, fromlist=["*"])
    found = getattr(module, cls) if isinstance(cls, str) else cls
    if not (isinstance(found, type) and issubclass(found, RunConfig)):
        raise TypeError(f"{fn.__module__}.{fn.__name__} does not name its config class in its return annotation")
    return found


def schema(kind: str) -> dict[str, Any]:
    """The JSON schema of ``kind``'s config."""
    return config_class(kind).model_json_schema()


def scalar(value: Any) -> str:
    """One YAML value on one line: plain where YAML reads it back as the same string, else JSON."""
    if isinstance(value, str) and value and "\n" not in value and ": " not in value and " #" not in value:
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value, ensure_ascii=False)


def field_type(info: FieldInfo) -> str:
    """``int``, ``str | None``, ``Literal['a', 'b']``, ``tuple[float, float]``: the annotation without module
    paths or constraints (a field's description states those)."""
    return type_text(info.annotation)


def type_text(a: Any) -> str:
    """One annotation as a reader writes it: ``Annotated`` metadata dropped, unions joined with ``|``."""
    origin, args = typing.get_origin(a), typing.get_args(a)
    if a is type(None):
        return "None"
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(type_text(x) for x in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(x) for x in args)}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(x) for x in args)}]"
    if isinstance(a, type):
        return a.__name__
    return re.sub(r"\b(?:[a-z_]\w*\.)+(?=[A-Za-z_])", "", str(a))


def show(config: BaseModel, indent: int = 0) -> str:
    """``config`` as YAML, each field followed by a comment with its description."""
    lines: list[str] = []
    pad = "  " * indent
    fields = type(config).model_fields
    for name, info in fields.items():
        value = getattr(config, name)
        note = f"  # {info.description}" if info.description else ""
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:{note}")
            lines.append(show(value, indent + 1))
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            lines.append(f"{pad}{name}:{note}")
            for item in value:
                body = show(item, indent + 2).lstrip()
                lines.append(f"{pad}  - {body}")
        else:
            dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            if isinstance(dumped, tuple):
                dumped = list(dumped)
            lines.append(f"{pad}{name}: {scalar(dumped)}{note}")
    return "\n".join(lines)


def reference_markdown() -> str:
    """Every kind's fields, section by section, with type, default and description (docs/config.md)."""
    from langrl.config import KINDS

    out = ["# Config reference", "",
           "Generated from the code by `python -m langrl.config.describe > docs/config.md`; a test checks it is "
           "current. Every key can be overridden with `--set key.sub=value` (values are YAML: quote braces, "
           "e.g. `--set 'prompts.template=\"Say {item}\"'`). `langrl config show CONFIG` prints a config with "
           "these descriptions.", ""]
    for kind in KINDS:
        cls = config_class(kind)
        out += [f"## kind: {kind}", "", (cls.__doc__ or "").strip().splitlines()[0], ""]
        out += section_table(cls, "")
    return "\n".join(out) + "\n"


def section_table(cls: type[BaseModel], prefix: str) -> list[str]:
    """The rows of ``cls``'s own fields, then one table per nested section."""
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        sub = section_of(info.annotation)
        if sub is not None:
            nested.append((key, sub))
            continue
        default = "required" if info.is_required() else f"`{scalar(default_of(info))}`".replace("|", "\\|")
        kind = field_type(info).replace("|", "\\|")
        rows.append(f"| `{key}` | {kind} | {default} | {(info.description or '').replace('|', '/')} |")
    out = [*rows, ""] if len(rows) > 2 else []
    for key, sub in nested:
        out += [f"### {key}", ""]
        out += section_table(sub, f"{key}.")
    return out


def section_of(annotation: Any) -> type[BaseModel] | None:
    """The section class of a field typed ``Section`` or ``Section | None``, else None."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) \
        else (annotation,)
    found = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
    return found[0] if len(found) == 1 and len([a for a in options if a is not type(None)]) == 1 else None


def default_of(info: FieldInfo) -> Any:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return list(value) if isinstance(value, tuple) else value


if __name__ == "__main__":
    print(reference_markdown(), end="")
