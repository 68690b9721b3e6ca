"""The errors a user acts on. The CLI prints their one-line message; no traceback without --debug.

Exit codes (../shared/CONTRACT.md "Errors"): :class:`UsageError` and :class:`ConfigError` -> 2;
every other :class:`MgteError` (bad data, infrastructure) -> 1.
"""

from __future__ import annotations


class MgteError(RuntimeError):
    """A failure the user must act on; the CLI prints its one-line message and exits 1."""

    exit_code = 1


class UsageError(MgteError):
    """A command line or a request that cannot be served as given (exit 2)."""

    exit_code = 2


class ConfigError(UsageError, ValueError):
    """A config that cannot be used; the message names the key and the file (exit 2)."""


class StageConflict(UsageError):
    """The output directory holds a run with another config or another input set (exit 2)."""


class BadInputError(MgteError):
    """Input that a stage refuses as a whole (wrong schema, error budget exceeded)."""


class StageIOError(MgteError):
    """An infrastructure error (disk full, permissions) while writing; names the path."""


class TaskFailed(MgteError):
    """A task failed after its bounded retries (or at once, for a deterministic error); names the input."""


class ModelLoadError(UsageError):
    """A model a stage names that cannot be used: not found, not an encoder where one is needed, a
    cut or unreadable file, or files that differ from its ``checksums.json``. The message names the
    config key or model and the file (exit 2: fix the reference or the model before any work)."""
