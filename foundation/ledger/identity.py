"""What names a result: the config hash (run-only keys left out), a task over one input, the set of
tasks a later task read, and the code that wrote it.

Tasks are named by their input's content, never by a position in a list: an input file is
described by ``{path, size, fingerprint}`` (:func:`foundation.ledger.inputs.describe_input`) and
its task by a hash of that (:func:`input_task`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable

from foundation.config import config_hash, config_to_dict

# Keys of a stage config that do not change its result: where it runs, where it writes, how many
# bad records it tolerates before giving up, what to do when its input set changed, whether it checks
# the checksums of the models it loads. A dotted key names a nested one (``reader.error_budget``).
RUN_ONLY_KEYS = ("output", "engine", "ray", "beam", "local", "progress", "on_input_change", "reader.error_budget",
                 "cache_dir", "verify_model")  # where a cache lives never changes a result


def portable_path(path: str, base: str | Path | None) -> str:
    """``path`` as an output's identity records it: a path under ``base`` (the directory that holds
    the output, e.g. a DAG's root) relative to the output, ``../<rest>``; any other as given.

    So an output (or a whole DAG) copied or moved elsewhere keeps its identity, while a change of
    outside data it names (another absolute path) still counts."""
    if base is None or not isinstance(path, str) or "://" in path:
        return path
    if not os.path.isabs(path):
        if os.sep not in path or not os.path.exists(path):  # a word ("cls"), a hub name, a missing path
            return path
        path = os.path.abspath(path)
    base = os.path.normpath(os.path.abspath(base))
    norm = os.path.normpath(path)
    if norm == base or norm.startswith(base.rstrip(os.sep) + os.sep):
        return "../" + os.path.relpath(norm, base).replace(os.sep, "/")
    return path


def portable(data: Any, base: str | Path | None) -> Any:
    """``data`` (plain JSON-able config) with every path under ``base`` made portable (:func:`portable_path`)."""
    if isinstance(data, str):
        return portable_path(data, base)
    if isinstance(data, dict):
        return {k: portable(v, base) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [portable(v, base) for v in data]
    return data


def identity_hash(cfg: Any, exclude: Iterable[str] = RUN_ONLY_KEYS, base: str | Path | None = None) -> str:
    """The config hash that names a stage's result: ``exclude`` (dotted paths allowed) left out,
    paths under ``base`` (the output's parent directory) relative to the output (:func:`portable`)."""
    data = json.loads(json.dumps(config_to_dict(cfg) if not isinstance(cfg, dict) else cfg, default=str))
    data = portable(data, base)
    for key in exclude:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config_hash(data)


def input_task(prefix: str, entry: dict) -> str:
    """The task over one input: ``<prefix>-<readable name>-<sha1(path|size|fingerprint)[:16]>``.

    The readable part is the file name (sorted like the inputs); the hash is the identity."""
    digest = hashlib.sha1(f"{entry['path']}|{entry['size']}|{entry['fingerprint']}".encode()).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in os.path.basename(entry["path"]))[:48]
    return f"{prefix}-{stem}-{digest}"


def deps_hash(tasks: Iterable[str]) -> str:
    """Identity of the set of tasks a later task read (its marker is valid only for that set)."""
    return hashlib.sha1("\n".join(sorted(tasks)).encode()).hexdigest()[:16]


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("mgte")
    except PackageNotFoundError:
        ver = "0+unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{ver}+g{sha}" if sha else ver
