"""The error a user can fix: a bad config value, dataset layout or run folder, reported as one line."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting, file or dataset cannot work; the message starts with the key, file or city at fault.

    Entry points print the message alone and exit with status 2 (HYDRA_FULL_ERROR=1 shows the traceback).
    """
