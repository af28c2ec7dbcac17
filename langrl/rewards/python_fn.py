"""User-written rewards, named in YAML as ``"module:function"`` or ``"path/to/file.py:function"``.

Loading by import (never ``exec`` of config text) keeps the config declarative and lets the
function live in the user's own package, tested there.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import inspect
import math
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from langrl.errors import ConfigError, RewardError
from langrl.rewards.base import ColumnUse, signature_columns

EXPECTED_FORM = "expected 'module:function' (e.g. 'my_rewards:brevity') or 'path/to/file.py:function'"


def _import_file(path_text: str, spec: str) -> Any:
    """Import a ``.py`` file as a module named after its stem (registered in ``sys.modules``).

    Registering before executing matches what ``import`` does, so dataclasses and pickling
    inside the user's file work.
    """
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ConfigError(f"python reward {spec!r}: file {str(path)!r} not found (relative to {Path.cwd()})")
    module_name = f"langrl_user_reward_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"python reward {spec!r}: cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise ConfigError(
            f"python reward {spec!r}: importing {str(path)!r} raised {type(e).__name__}: {e}"
        ) from e
    return module


def _import_module(module_name: str, spec: str) -> Any:
    """``importlib.import_module`` with a message that tells "not found" from "found but broken"."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        # e.name is the module that was missing: ours, or one that the user's module imports.
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise ConfigError(
                f"python reward {spec!r}: module {module_name!r} not found "
                f"(is it installed, or its folder on PYTHONPATH?); {EXPECTED_FORM}"
            ) from e
        raise ConfigError(f"python reward {spec!r}: importing module {module_name!r} failed: {e}") from e
    except Exception as e:
        raise ConfigError(
            f"python reward {spec!r}: importing module {module_name!r} raised {type(e).__name__}: {e}"
        ) from e


def _public_callables(owner: Any) -> list[str]:
    """Public callables of ``owner``, for a "did you mean" list; for a module, only those defined in it."""
    names = []
    for n in dir(owner):
        obj = getattr(owner, n, None)
        if n.startswith("_") or not callable(obj):
            continue
        if inspect.ismodule(owner) and getattr(obj, "__module__", owner.__name__) != owner.__name__:
            continue
        names.append(n)
    return names


def load_function(spec: str) -> Callable[..., Any]:
    """Resolve ``"module:function"`` or ``"path/to/file.py:function"`` to the callable it names.

    The part after the last ``:`` may be dotted (``"pkg.mod:Scorer.score"``). A file path is
    recognised by its ``.py`` suffix. Raises `ConfigError` saying the expected form and what
    failed: bad form, module/file not found, attribute not found, or not callable.
    """
    module_part, sep, attr_part = spec.rpartition(":")
    if not sep or not module_part.strip() or not attr_part.strip():
        raise ConfigError(f"python reward {spec!r}: {EXPECTED_FORM}")
    module_part, attr_part = module_part.strip(), attr_part.strip()
    if module_part.endswith(".py"):
        module = _import_file(module_part, spec)
    else:
        module = _import_module(module_part, spec)

    target: Any = module
    for i, part in enumerate(attr_part.split(".")):
        if not hasattr(target, part):
            owner = module_part if i == 0 else ".".join(attr_part.split(".")[:i])
            available = _public_callables(target)
            raise ConfigError(
                f"python reward {spec!r}: attribute {part!r} not found in {owner!r} "
                f"(callables there: {', '.join(available[:20]) or 'none'}); {EXPECTED_FORM}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(
            f"python reward {spec!r}: {attr_part!r} is a {type(target).__name__}, "
            f"not callable; {EXPECTED_FORM}"
        )
    return target


DEFAULT_TIMEOUT_S = 60.0
"""Seconds one call of a python reward may take (``timeout_s`` in its config; None waits forever)."""


class PythonReward:
    """Reward = ``fn(prompts, completions, **kwargs)``: a user function with fixed keyword arguments.

    ``kwargs`` come from the config, so one function can serve several settings
    (``{type: python, function: "my_rewards:keyword", kwargs: {word: "cat"}}``). Prompt columns reach ``fn``
    when it declares them (``def exact(prompts, completions, answer)``, or ``**columns``); a config kwarg
    wins over a column of the same name.

    With ``timeout_s`` (default `DEFAULT_TIMEOUT_S`) each call runs in a worker thread and a call that has
    not returned after ``timeout_s`` seconds raises `RewardError` naming the reward and the limit (the
    stuck call is abandoned in its daemon thread: Python cannot stop a thread). Signals are not used: they
    only work in the main thread. ``timeout_s=None`` calls ``fn`` directly in the caller's thread.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        if timeout_s is not None and not 0 < timeout_s < math.inf:
            raise ConfigError(f"python reward timeout_s = {timeout_s!r}: give a positive number of seconds, "
                              f"or null to wait without a limit")
        self.fn = fn
        self.kwargs = dict(kwargs or {})
        self.name = name or f"python:{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        self.timeout_s = timeout_s
        self.columns = signature_columns(fn, fixed=self.kwargs)

    def column_use(self) -> ColumnUse:
        """The prompt columns ``fn`` declares, less those the config's ``kwargs`` already give."""
        return self.columns

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        # Returned as-is: `score` converts and checks the values (numpy arrays and tensors pass).
        kwargs = {**self.columns.pick(columns), **self.kwargs}
        if self.timeout_s is None:
            return self.fn(prompts, completions, **kwargs)
        return self._call_with_timeout(prompts, completions, kwargs, self.timeout_s)

    def _call_with_timeout(self, prompts: list[str], completions: list[str], kwargs: dict[str, Any],
                           timeout_s: float) -> Any:
        """``fn`` in a daemon thread joined for ``timeout_s``; its result, or its exception re-raised here."""
        outcome: list[Any] = []
        failure: list[BaseException] = []
        context = contextvars.copy_context()  # the caller's context variables, as a direct call would see

        def target() -> None:
            try:
                outcome.append(context.run(self.fn, prompts, completions, **kwargs))
            except BaseException as e:  # re-raised in the caller's thread
                failure.append(e)

        worker = threading.Thread(target=target, name=f"langrl reward {self.name}", daemon=True)
        worker.start()
        worker.join(timeout_s)
        if worker.is_alive():
            raise RewardError(
                f"reward {self.name!r} did not return within timeout_s = {timeout_s:g} s (a batch of "
                f"{len(completions)} completions); if it is only slow, raise timeout_s in its reward config "
                f"(e.g. timeout_s: {4 * timeout_s:g}) or set timeout_s: null to wait without a limit"
            )
        if failure:
            raise failure[0]
        return outcome[0]

    @classmethod
    def from_spec(
        cls, spec: str, kwargs: Mapping[str, Any] | None = None, name: str | None = None,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
    ) -> PythonReward:
        """Load ``spec`` with `load_function`; named ``python:<spec>`` unless ``name`` is given."""
        return cls(load_function(spec), kwargs, name or f"python:{spec}", timeout_s)
