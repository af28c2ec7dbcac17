"""The observation space shared by the text environments.

``gymnasium.spaces.Text`` checks every character of an observation against its charset, and its default
charset is alphanumeric only, so a sentence with a space or a comma would fail ``check_env``. The charset
here covers what the environments write (letters, digits, punctuation of the descriptions, newlines).
"""

from __future__ import annotations

import string

from gymnasium import spaces

CHARSET = string.ascii_letters + string.digits + " \n.,;:!?'\"()+-_/"
MAX_CHARS = 4096  # a 7x7 BabyAI view holds at most 48 objects of ~60 characters each: ~3,000 characters


def text_space(max_length: int = MAX_CHARS) -> spaces.Text:
    """A ``Text`` space of up to ``max_length`` characters from :data:`CHARSET` (empty allowed)."""
    return spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)
