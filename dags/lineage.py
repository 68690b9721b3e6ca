"""DAG lineage: which step outputs a step was built from, and whether it must be rebuilt.

Every step of a DAG run records in ``dag.json`` the identity of each upstream it read: for an
earlier step, the sha256 of that step's ``manifest.json`` and ``_SUCCESS`` chained with that
step's own upstream identities (a stage rewrites both whenever it rebuilds its output: the
manifest carries the config hash, counts and outputs, ``_SUCCESS`` the id of the run, so any
rebuild is a new identity, while a copy or a move of the tree, by any tool, keeps it);
for outside data (a step's ``input`` paths), a
fingerprint of the file listing (relative path, size, mtime). On the next run a step is rebuilt
when an upstream identity differs from the one recorded, when its output is missing or has no
lineage record, or when the stage refuses its changed config; otherwise it is skipped as up to
date. A rebuilt step changes its own identity, so every step below it is rebuilt too.

A stale output is never mixed with a new one: it is moved aside to ``OUTPUT/<step>.stale-<UTC
time>`` (kept as evidence; delete those directories when no longer wanted) and the step runs
into an empty directory.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from foundation.config import config_hash, config_to_dict
from foundation.ledger import is_finished
from foundation.ledger.identity import portable

ID_LEN = 16  # hex digits of sha256 kept in dag.json


def output_identity(step_dir: Path, upstream: dict[str, str | None] | None = None) -> str | None:
    """Identity of a finished step output: sha256 of its ``manifest.json`` and ``_SUCCESS`` (which
    holds the id of the run that finished it) and of the identities of the upstreams it was built
    from; None while the step is not finished. Content only, no mtime or path: a copy, a move or a
    round trip through a bucket keeps it.

    Chaining the upstream identities in means a step rebuilt from changed upstreams has a new
    identity even if its manifest came out byte for byte the same, so the change reaches every
    step below it.
    """
    if not is_finished(step_dir):
        return None
    h = hashlib.sha256((step_dir / "manifest.json").read_bytes())
    h.update((step_dir / "_SUCCESS").read_bytes())  # the run's id: a rebuild within the same second differs too
    h.update(json.dumps(sorted((upstream or {}).items())).encode())
    return h.hexdigest()[:ID_LEN]


def _files(path: str) -> list[Path]:
    matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
    out: list[Path] = []
    for m in map(Path, matches):
        if m.is_dir():
            out += sorted(p for p in m.rglob("*") if p.is_file())
        elif m.is_file():
            out.append(m)
    return out


def input_identity(path: str) -> str:
    """Fingerprint of outside data: relative path, size and mtime of every file under ``path``.

    Remote URLs are taken as they are (their content is not listed). A missing path has the
    identity ``missing`` so that its appearance later counts as a change.
    """
    if "://" in path:
        return "url:" + hashlib.sha256(path.encode()).hexdigest()[:ID_LEN]
    files = _files(path)
    if not files:
        return "missing"
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:ID_LEN]


def settings_hash(stage_cfg: Any) -> str:
    """Hash of the resolved stage config as the DAG built it (output left out).

    It includes keys the stage itself ignores (engine, scaling): when only those change, the
    runner asks the stage, whose own config hash decides whether the output still stands. Paths
    under the DAG's root are relative (:func:`foundation.ledger.identity.portable`): a moved or
    copied DAG output is up to date where it lands.
    """
    base = Path(os.path.abspath(stage_cfg.output)).parent  # the DAG's root: its paths recorded portably
    return config_hash(portable(config_to_dict(stage_cfg), base), exclude=("output",))


def pinned_config_hash(step_dir: Path) -> str | None:
    """The config hash a stage pinned in its output directory (``_config.json``), if any."""
    pinned = step_dir / "_config.json"
    try:
        return json.loads(pinned.read_text())["config_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def decide(prev: dict | None, upstream: dict[str, str | None], settings: str, step_dir: Path) -> tuple[str, str]:
    """(action, why) for one step: action is ``run`` (into the directory as it is, resuming an
    unfinished run), ``rebuild`` (move the output aside first), ``check`` (ask the stage: its
    config changed) or ``skip``."""
    if not step_dir.exists():
        return "run", "not run before" if not prev else "no output (deleted?): built again"
    if not prev or "upstream" not in prev:
        return "rebuild", "no lineage record for the existing output in dag.json: rebuilt"
    changed = [f"{'input ' + name[6:] if name.startswith('input:') else 'upstream ' + name} changed "
               f"(hash {prev['upstream'].get(name)} -> {ident})"
               for name, ident in upstream.items() if prev["upstream"].get(name) != ident]
    gone = sorted(set(prev["upstream"]) - set(upstream))
    if gone:
        changed.append(f"no longer reads {', '.join(gone)}")
    if changed:
        return "rebuild", "; ".join(changed)
    if not is_finished(step_dir):
        return "run", "unfinished: resumed"
    if prev.get("settings") != settings:
        return "check", "config changed"
    return "skip", "up to date"


def move_aside(step_dir: Path) -> Path:
    """Rename ``step_dir`` to ``<step>.stale-<UTC time>`` (a new name if that one is taken)."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = step_dir.with_name(f"{step_dir.name}.stale-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = step_dir.with_name(f"{step_dir.name}.stale-{stamp}-{n}")
    os.replace(step_dir, target)
    return target


def upstream_steps(step) -> list[str]:
    """Names of the earlier steps a step reads (inputs, init, model, reranker), in order, once each."""
    names: list[str] = []
    for ref in step.refs():
        if ref.split("/")[0] not in names:
            names.append(ref.split("/")[0])
    return names
