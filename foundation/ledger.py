"""Restartable, accountable stage outputs (CONTRACT.md "Every stage output directory").

A stage output is a directory of tasks. Each task writes its files as ``*.tmp`` in the
destination directory and renames them; its marker ``_tasks/<task>.json`` (config hash + counts)
is written last, so a task without a marker is unfinished and readers ignore its files. The stage
writes ``manifest.json`` and then ``_SUCCESS`` when every task is done. ``_config.json`` pins the
config hash from the first run: a rerun with the same hash resumes (finished tasks are skipped,
a finished stage is a no-op), a rerun with another hash refuses and shows both.

Tasks are named by their input's content, never by a position in a list: an input file is
described by ``{path, size, fingerprint}`` (:func:`describe_input`) and its task by a hash of
that (:func:`input_task`). A stage that reads files pins its expanded input list in
``_inputs.json`` at the first run (:meth:`StageOutput.pin_inputs`); a rerun over another input
set refuses naming the files added, removed or changed, or, when the config says
``on_input_change: redo``, hands the difference to the stage, which redoes exactly that.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from foundation.config import config_hash, config_to_dict
from foundation.errors import BadInputError, MgteError, StageConflict, StageIOError  # noqa: F401 (re-exported)
from foundation.faults import fault_point
from storage_schemas import Table, check_counts, validate_manifest, validate_task_marker

# Keys of a stage config that do not change its result: where it runs, where it writes, how many
# bad records it tolerates before giving up, what to do when its input set changed. A dotted key
# names a nested one (``reader.error_budget``).
RUN_ONLY_KEYS = ("output", "engine", "ray", "beam", "local", "progress", "on_input_change", "reader.error_budget",
                 "cache_dir")  # where a cache lives never changes a result
EMPTY_COUNTS = {"input": 0, "kept": 0, "dropped": 0, "quarantined": 0}


def identity_hash(cfg: Any, exclude: Iterable[str] = RUN_ONLY_KEYS) -> str:
    """The config hash that names a stage's result: ``exclude`` (dotted paths allowed) left out."""
    data = json.loads(json.dumps(config_to_dict(cfg) if not isinstance(cfg, dict) else cfg, default=str))
    for key in exclude:
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return config_hash(data)


# ---- inputs named by content -----------------------------------------------------------------------
FINGERPRINT_EDGE = 1 << 20  # bytes hashed at each end of a large file


def _open(path: str):
    if "://" in path and not path.startswith("file://"):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path.removeprefix("file://"), "rb")


def describe_input(path: str) -> dict:
    """``{path, size, fingerprint}`` of one input file: xxh64 of the whole file up to 2 MiB, else
    of its first and last MiB (with the size, cheap and enough to see a rewrite or an append)."""
    try:
        with _open(path) as fh:
            data = fh.read(2 * FINGERPRINT_EDGE + 1)
            size = len(data)
            if size > 2 * FINGERPRINT_EDGE:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(size - FINGERPRINT_EDGE)
                data = data[:FINGERPRINT_EDGE] + fh.read(FINGERPRINT_EDGE)
    except FileNotFoundError:
        raise BadInputError(f"input file {path} does not exist (or vanished while the stage started)") from None
    except OSError as exc:
        raise StageIOError(f"cannot read input file {path}: {exc.strerror or exc}") from exc
    h = xxhash.xxh64(data)
    return {"path": path, "size": size, "fingerprint": f"xxh64:{h.hexdigest()}"}


def describe_inputs(paths: Iterable[str]) -> list[dict]:
    return [describe_input(p) for p in paths]


def input_task(prefix: str, entry: dict) -> str:
    """The task over one input: ``<prefix>-<readable name>-<sha1(path|size|fingerprint)[:16]>``.

    The readable part is the file name (sorted like the inputs); the hash is the identity."""
    digest = hashlib.sha1(f"{entry['path']}|{entry['size']}|{entry['fingerprint']}".encode()).hexdigest()[:16]
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in os.path.basename(entry["path"]))[:48]
    return f"{prefix}-{stem}-{digest}"


def deps_hash(tasks: Iterable[str]) -> str:
    """Identity of the set of tasks a later task read (its marker is valid only for that set)."""
    return hashlib.sha1("\n".join(sorted(tasks)).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class InputChange:
    """How the input set differs from the pinned one (entries as :func:`describe_input` writes)."""

    added: tuple[dict, ...] = ()
    removed: tuple[dict, ...] = ()
    changed: tuple[tuple[dict, dict], ...] = ()  # (pinned, now)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self, first: int = 3) -> str:
        parts = []
        for what, paths in (("added", [e["path"] for e in self.added]),
                            ("removed", [e["path"] for e in self.removed]),
                            ("changed", [new["path"] for _old, new in self.changed])):
            if paths:
                more = f" and {len(paths) - first} more" if len(paths) > first else ""
                parts.append(f"{len(paths)} {what} ({', '.join(paths[:first])}{more})")
        return "; ".join(parts)


def diff_inputs(pinned: list[dict], now_: list[dict]) -> InputChange:
    old = {e["path"]: e for e in pinned}
    new = {e["path"]: e for e in now_}
    return InputChange(
        added=tuple(new[p] for p in sorted(set(new) - set(old))),
        removed=tuple(old[p] for p in sorted(set(old) - set(new))),
        changed=tuple((old[p], new[p]) for p in sorted(set(old) & set(new))
                      if (old[p]["size"], old[p]["fingerprint"]) != (new[p]["size"], new[p]["fingerprint"])))


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
        self.config_hash = identity_hash(self.config, exclude)
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
            atomic_write_json(pinned, {"stage": self.stage, "inputs": entries})
            return InputChange()
        change = diff_inputs(json.loads(pinned.read_text())["inputs"], entries)
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
        atomic_write_json(self.root / "_inputs.json", {"stage": self.stage, "inputs": entries})

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

    def write_table(self, rel: str, table: pa.Table, schema: Table | None = None) -> str:
        if schema is not None:
            table = schema.validate(table, where=str(self.root / rel))
        atomic_write_parquet(self.root / rel, table)
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


def stage_output_files(root: str | Path, subdir: str, schema: Table | None = None,
                       fields: Iterable[str] | None = None) -> list[Path]:
    """The ``subdir`` files of a finished stage that belong to marked tasks (never a stray file
    of an unfinished or forgotten task), each checked against ``schema`` (``fields``: only
    these), naming the file and the field on a mismatch (:class:`BadInputError`)."""
    root = Path(root)
    manifest = read_manifest(root)
    prefix = subdir.rstrip("/") + "/"
    marked = set()
    for path in sorted((root / "_tasks").glob("*.json")):
        marker = json.loads(path.read_text())
        if marker.get("config_hash") == manifest["config_hash"]:
            marked.update(f for f in marker["files"] if f.startswith(prefix))
    listed = [f for files in manifest["outputs"].values() for f in files if f.startswith(prefix)]
    files = [root / f for f in (listed or sorted(marked)) if f in marked]
    if schema is not None:
        wanted = set(fields) if fields is not None else set(schema.names)
        for f in files:
            have = pq.read_schema(f)
            for field in schema.schema:
                if field.name not in wanted:
                    continue
                if field.name not in have.names:
                    raise BadInputError(f"{f}: missing field '{field.name}' (expected {field.type}, table {schema.name})")
                got = have.field(field.name).type
                if not (got.equals(field.type) or (pa.types.is_large_string(got) and pa.types.is_string(field.type))):
                    raise BadInputError(f"{f}: field '{field.name}' expected {field.type}, got {got} (table {schema.name})")
    return files


def read_stage_output(root: str | Path, subdir: str, schema: Table | None = None,
                      columns: list[str] | None = None) -> pa.Table:
    """The rows of :func:`stage_output_files`, concatenated (``columns``: only these)."""
    files = stage_output_files(root, subdir, schema, columns)
    if not files:
        manifest = read_manifest(root)
        counts = manifest.get("counts", {})
        if counts.get("kept") == 0:
            lost = {**manifest.get("dropped_by_reason", {}), "quarantined": counts.get("quarantined", 0)}
            why = ", ".join(f"{k} {v}" for k, v in sorted(lost.items()) if v) or "no input"
            raise BadInputError(f"{root}: the {manifest.get('stage', 'finished')} stage kept 0 of "
                                f"{counts.get('input', 0)} records ({why}): nothing to read")
        raise BadInputError(f"{root}: the finished stage has no '{subdir}' files of marked tasks")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")
