"""One stage's output directory (docs/ARCHITECTURE.md "Failure model").

A stage output is a directory of tasks. Each task writes its files through the atomic writer
(:mod:`foundation.ledger.atomic`); its marker ``_tasks/<task>.json`` (config hash + counts) is
written last, so a task without a marker is unfinished and readers ignore its files. The stage
writes ``manifest.json`` and then ``_SUCCESS`` when every task is done. ``_config.json`` pins the
config hash from the first run: a rerun with the same hash resumes (finished tasks are skipped,
a finished stage is a no-op), a rerun with another hash refuses and shows both.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from foundation.config import config_to_dict
from foundation.errors import StageConflict
from foundation.faults import fault_point
from foundation.ledger.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from foundation.ledger.identity import RUN_ONLY_KEYS, code_version, identity_hash, now
from foundation.ledger.inputs import InputChange, diff_inputs
from foundation.ledger.readers import is_finished
from storage_schemas import Table, check_counts, validate_manifest, validate_task_marker

EMPTY_COUNTS = {"input": 0, "kept": 0, "dropped": 0, "quarantined": 0}


class StageOutput:
    """One stage's output directory: config pinning, task markers, manifest."""

    def __init__(self, root: str | Path, stage: str, cfg: Any, *, exclude: Iterable[str] = RUN_ONLY_KEYS):
        self.root = Path(root)
        self.stage = stage
        self.config = config_to_dict(cfg)
        self.base = str(Path(os.path.abspath(self.root)).parent)  # paths under it are recorded portably
        self.config_hash = identity_hash(self.config, exclude, self.base)
        self.started = now()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return is_finished(self.root)

    def begin(self) -> bool:
        """Pin the config; True when the stage is already complete (a rerun is then a no-op)."""
        pinned = self.root / "_config.json"
        if pinned.is_file():
            old = json.loads(pinned.read_text())["config_hash"]
            if old != self.config_hash:
                raise StageConflict(
                    f"{self.root} holds a '{self.stage}' run with config hash {old}; this config hashes to "
                    f"{self.config_hash}. Use another --output, or delete the directory to rebuild.")
            if self.done:
                return True
        else:
            atomic_write_json(pinned, {"stage": self.stage, "config_hash": self.config_hash,
                                       "config": self.config})
        for stale in sorted(self.root.rglob("*.tmp"), reverse=True):  # left by a task killed before its rename
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        return False

    # -- inputs ------------------------------------------------------------------------------
    def pin_inputs(self, entries: list[dict], on_change: str = "refuse") -> InputChange:
        """Pin the expanded input list (first run) or compare with the pinned one.

        A difference refuses (``on_change='refuse'``) with a one-line :class:`StageConflict`
        naming the files added, removed or changed. With ``'redo'`` the difference is returned
        and the stage must redo what depends on it: the ledger has already removed ``_SUCCESS``
        and the manifest, and pins the new list only afterwards (:meth:`repin_inputs`), so a
        run killed in between sees the same difference again."""
        pinned = self.root / "_inputs.json"
        if not pinned.is_file():
            self.repin_inputs(entries)
            return InputChange()
        change = self.input_change(entries)
        if not change:
            return change
        if on_change != "redo":
            raise StageConflict(
                f"{self.root} was built from another input set: {change.summary()}. Use another --output, "
                f"or set on_input_change=redo to redo exactly what changed.")
        for name in ("_SUCCESS", "manifest.json"):
            (self.root / name).unlink(missing_ok=True)
        return change

    def repin_inputs(self, entries: list[dict]) -> None:
        atomic_write_json(self.root / "_inputs.json", {"stage": self.stage, "base": self.base, "inputs": entries})

    def input_change(self, entries: list[dict]) -> InputChange:
        """How ``entries`` differ from the pinned input list (paths compared portably: an output
        moved with its upstream outputs sees no change)."""
        pinned = self.root / "_inputs.json"
        if not pinned.is_file():
            return InputChange()
        data = json.loads(pinned.read_text())
        return diff_inputs(data["inputs"], entries, pinned_base=data.get("base"), base=self.base)

    def pinned_inputs(self) -> list[dict]:
        pinned = self.root / "_inputs.json"
        return json.loads(pinned.read_text())["inputs"] if pinned.is_file() else []

    # -- tasks -------------------------------------------------------------------------------
    def marker_path(self, task: str) -> Path:
        return self.root / "_tasks" / f"{task}.json"

    def task_marker(self, task: str, deps: str | None = None) -> dict | None:
        """The marker of a finished task; None when absent, of another config, or (``deps``
        given) written over another set of upstream tasks."""
        path = self.marker_path(task)
        if not path.is_file():
            return None
        marker = validate_task_marker(json.loads(path.read_text()), where=str(path))
        if marker["config_hash"] != self.config_hash:
            return None
        return marker if deps is None or marker.get("deps") == deps else None

    def drop_task(self, task: str) -> None:
        """Forget a task: its marker first (so it counts as unfinished), then the files it listed."""
        path = self.marker_path(task)
        if not path.is_file():
            return
        files = json.loads(path.read_text()).get("files", [])
        path.unlink()
        for rel in files:
            (self.root / rel).unlink(missing_ok=True)

    def write_table(self, rel: str, table: pa.Table, schema: Table | None = None,
                    row_group_size: int | None = None) -> str:
        if schema is not None:
            table = schema.validate(table, where=str(self.root / rel))
        atomic_write_parquet(self.root / rel, table, row_group_size)
        return rel

    def write_rows(self, rel: str, rows: list[dict], schema: Table) -> str:
        return self.write_table(rel, schema.from_rows(rows), None)

    def mark_task(self, task: str, counts: dict, files: list[str], *, input: dict | None = None,
                  deps: str | None = None, extra: dict | None = None) -> dict:
        """Mark a task finished (last). ``input``: the file it read ({path, size, fingerprint});
        ``deps``: :func:`deps_hash` of the upstream tasks it read."""
        marker = {"task": task, "config_hash": self.config_hash, "counts": dict(counts), "files": list(files)}
        if input is not None:
            marker["input"] = dict(input)
        if deps is not None:
            marker["deps"] = deps
        if extra:
            marker.update(extra)
        validate_task_marker(marker, where=f"task {task}")
        fault_point("before_marker", task)
        atomic_write_json(self.marker_path(task), marker)
        return marker

    def task_files(self, subdir: str) -> list[Path]:
        """Files under ``subdir`` that belong to finished tasks (the only ones readers may use)."""
        out = []
        for marker in sorted((self.root / "_tasks").glob("*.json")):
            data = json.loads(marker.read_text())
            if data.get("config_hash") != self.config_hash:
                continue
            out += [self.root / f for f in data["files"] if f.startswith(subdir.rstrip("/") + "/")]
        return sorted(out)

    # -- the end -----------------------------------------------------------------------------
    def finish(self, *, counts: dict, dropped_by_reason: dict, inputs: list[dict], outputs: dict,
               extra: dict | None = None) -> dict:
        check_counts(counts, dropped_by_reason, where=f"{self.stage} output {self.root}")
        manifest = {
            "stage": self.stage, "config": self.config, "config_hash": self.config_hash, "inputs": inputs,
            "counts": dict(counts), "dropped_by_reason": dict(sorted(dropped_by_reason.items())),
            "outputs": outputs, "code_version": code_version(), "started": self.started, "finished": now(),
            "extra": extra or {},
        }
        validate_manifest(manifest)
        atomic_write_json(self.root / "manifest.json", manifest)
        fault_point("before_success", str(self.root))
        # the config hash and this run's id: a rebuild with byte-identical results is still a new
        # output to the DAG lineage (dags/lineage.py reads manifest and _SUCCESS, never mtimes)
        atomic_write_bytes(self.root / "_SUCCESS", f"{self.config_hash} {uuid.uuid4().hex}\n".encode())
        return manifest


def sum_counts(markers: Iterable[dict]) -> Counter:
    total: Counter = Counter(input=0, kept=0, dropped=0, quarantined=0)
    for marker in markers:
        total.update(marker["counts"])
    return total
