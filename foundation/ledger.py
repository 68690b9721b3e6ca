"""Restartable, accountable stage outputs (CONTRACT.md "Every stage output directory").

A stage output is a directory of tasks. Each task writes its files as ``*.tmp`` in the
destination directory and renames them; its marker ``_tasks/<task>.json`` (config hash + counts)
is written last, so a task without a marker is unfinished and readers ignore its files. The stage
writes ``manifest.json`` and then ``_SUCCESS`` when every task is done. ``_config.json`` pins the
config hash from the first run: a rerun with the same hash resumes (finished tasks are skipped,
a finished stage is a no-op), a rerun with another hash refuses and shows both.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.config import config_hash, config_to_dict
from foundation.errors import BadInputError, MgteError, StageConflict, StageIOError  # noqa: F401 (re-exported)
from foundation.faults import fault_point
from storage_schemas import Table, check_counts, validate_manifest, validate_task_marker

# Keys of a stage config that do not change its result (where it runs, where it writes).
RUN_ONLY_KEYS = ("output", "engine", "ray", "beam", "local", "progress")


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("before_rename", str(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StageIOError(f"cannot write {path}: {exc.strerror or exc}") from exc


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(Path(path), json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fault_point("write_parquet", str(path))
        pq.write_table(table, tmp, compression="zstd")
        fault_point("before_rename", str(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StageIOError(f"cannot write {path}: {exc.strerror or exc}") from exc


class StageOutput:
    """One stage's output directory: config pinning, task markers, manifest."""

    def __init__(self, root: str | Path, stage: str, cfg: Any, *, exclude: Iterable[str] = RUN_ONLY_KEYS):
        self.root = Path(root)
        self.stage = stage
        self.config = config_to_dict(cfg)
        self.config_hash = config_hash(self.config, exclude=exclude)
        self.started = now()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return (self.root / "_SUCCESS").is_file() and (self.root / "manifest.json").is_file()

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

    # -- tasks -------------------------------------------------------------------------------
    def marker_path(self, task: str) -> Path:
        return self.root / "_tasks" / f"{task}.json"

    def task_marker(self, task: str) -> dict | None:
        path = self.marker_path(task)
        if not path.is_file():
            return None
        marker = validate_task_marker(json.loads(path.read_text()), where=str(path))
        return marker if marker["config_hash"] == self.config_hash else None

    def write_table(self, rel: str, table: pa.Table, schema: Table | None = None) -> str:
        if schema is not None:
            table = schema.validate(table, where=str(self.root / rel))
        atomic_write_parquet(self.root / rel, table)
        return rel

    def write_rows(self, rel: str, rows: list[dict], schema: Table) -> str:
        return self.write_table(rel, schema.from_rows(rows), None)

    def mark_task(self, task: str, counts: dict, files: list[str]) -> dict:
        marker = {"task": task, "config_hash": self.config_hash, "counts": dict(counts), "files": list(files)}
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
        atomic_write_bytes(self.root / "_SUCCESS", self.config_hash.encode())
        return manifest


def read_manifest(root: str | Path) -> dict:
    """The manifest of a finished stage output; refuses unfinished ones."""
    root = Path(root)
    if not (root / "_SUCCESS").is_file():
        raise FileNotFoundError(f"{root}: no _SUCCESS marker: the stage did not finish")
    return validate_manifest(json.loads((root / "manifest.json").read_text()), where=str(root / "manifest.json"))


def read_output_table(root: str | Path, table: str) -> pa.Table:
    """Concatenate the files a finished stage lists under ``outputs[table]``."""
    manifest = read_manifest(root)
    files = [Path(root) / f for f in manifest["outputs"].get(table, [])]
    if not files:
        raise FileNotFoundError(f"{root}: manifest lists no '{table}' files")
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def sum_counts(markers: Iterable[dict]) -> Counter:
    total: Counter = Counter(input=0, kept=0, dropped=0, quarantined=0)
    for marker in markers:
        total.update(marker["counts"])
    return total
