"""Models: loading (embedded, hub, local, tiny), small word-level models, LoRA and the reference policy."""

from langrl.models.lm import LM
from langrl.models.loading import DEFAULT_MODEL, EMBEDDED, cache_dir, load_lm
from langrl.models.reference import Reference, apply_lora, merged_lora
from langrl.models.small import small_text_lm
from langrl.models.tiny import tiny_lm

__all__ = ["DEFAULT_MODEL", "EMBEDDED", "LM", "Reference", "apply_lora", "cache_dir", "load_lm",
           "merged_lora", "small_text_lm", "tiny_lm"]
