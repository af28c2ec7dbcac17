"""The KV cache argument across transformers versions: ``cache`` in recent ones, ``past_key_values`` before.

transformers 5.2x renamed the forward argument and the output field of its models (the old names still
work there, with a FutureWarning, and are due to go); langrl supports both sides of the rename.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn


@functools.cache
def _takes_cache(cls: Any) -> bool:
    return "cache" in inspect.signature(cls.forward).parameters


def cache_kwargs(model: nn.Module, cache: Any) -> dict[str, Any]:
    """The keyword argument that passes ``cache`` to ``model``'s forward."""
    # A PEFT wrapper passes the argument on to the model it wraps: that model's forward decides.
    unwrap: Any = getattr(model, "get_base_model", None)
    owner = unwrap() if callable(unwrap) else model
    kind: Any = type(owner)
    return {"cache": cache} if _takes_cache(kind) else {"past_key_values": cache}


def output_cache(out: Any) -> Any:
    """The KV cache a forward returned (``use_cache=True``)."""
    return out["cache"] if "cache" in out else out["past_key_values"]
