"""Exceptions that carry a message meant for the user, not a traceback."""


class LangrlError(Exception):
    """Base class: the CLI prints these as one clean line and exits 2."""


class ConfigError(LangrlError, ValueError):
    """A configuration value is wrong. The message names the field, the bad value and the fix."""


class RewardError(LangrlError, RuntimeError):
    """A reward function raised or returned a non-finite value."""


class NonFiniteError(LangrlError, FloatingPointError):
    """A loss, gradient, reward, metric or weight became NaN or infinite. The message names the step and
    the quantity; nothing of that step was checkpointed."""


class CheckpointError(LangrlError):
    """A checkpoint file is missing, corrupt or holds non-finite weights. The message names the file."""
