"""The one reader of finished stage outputs, and the one check of what a directory is.

- :func:`is_stage_output`: a directory a stage wrote (finished or not), as opposed to raw files;
  :func:`is_finished`: one whose manifest and ``_SUCCESS`` are written;
- :func:`read_manifest` (``kind``: which stage must have written it): the manifest of a finished
  output; an unfinished one or one of another kind is refused in one line;
- :func:`stage_output`: the two together, for an input that may be a stage output or raw files;
- :func:`stage_output_files` / :func:`read_stage_output`: the files (rows) of a finished output
  under a sub-directory or a single file. A task's file is read only when its task has a marker
  of the output's config (never a stray file of an unfinished or forgotten task); a stage-level
  file (``stats/...``, written after every task and before ``_SUCCESS``) only when the manifest
  lists it. Each file is checked against the schema, naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import BadInputError
from storage_schemas import Table, validate_manifest


def is_stage_output(path: str | Path) -> bool:
    """True for a directory some stage wrote (its pinned config or its manifest is there)."""
    path = Path(path)
    return path.is_dir() and ((path / "_config.json").is_file() or (path / "manifest.json").is_file())


def is_finished(path: str | Path) -> bool:
    """True for a finished stage output: its manifest written, then ``_SUCCESS``."""
    path = Path(path)
    return (path / "_SUCCESS").is_file() and (path / "manifest.json").is_file()


def read_manifest(root: str | Path, kind: str | tuple[str, ...] | None = None, *, who: str = "") -> dict:
    """The manifest of a finished stage output (of a stage named ``kind``, when given); an
    unfinished output or one of another kind is a one-line :class:`BadInputError`."""
    root = Path(root)
    prefix = f"{who}: " if who else ""
    if not is_finished(root):
        raise BadInputError(f"{prefix}{root} is an unfinished stage output (no _SUCCESS / manifest.json): "
                            "the stage did not finish; rerun it to complete it")
    manifest = validate_manifest(json.loads((root / "manifest.json").read_text()), where=str(root / "manifest.json"))
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds and manifest["stage"] not in kinds:
        raise BadInputError(f"{prefix}{root} is a '{manifest['stage']}' output, not a `mgte {' / '.join(kinds)}` one")
    return manifest


def stage_output(path: str | Path, kind: str | tuple[str, ...] | None = None, *, who: str = "") -> dict | None:
    """Is ``path`` a stage output of kind ``kind``? Its manifest when it is a finished one, None
    when it is no stage output at all (raw files); refuses an unfinished one or another kind."""
    return read_manifest(path, kind, who=who) if is_stage_output(path) else None


def _check_schema(f: Path, schema: Table, wanted: set[str]) -> None:
    have = pq.read_schema(f)
    for field in schema.schema:
        if field.name not in wanted:
            continue
        if field.name not in have.names:
            raise BadInputError(f"{f}: missing field '{field.name}' (expected {field.type}, table {schema.name})")
        got = have.field(field.name).type
        if not (got.equals(field.type) or (pa.types.is_large_string(got) and pa.types.is_string(field.type))):
            raise BadInputError(f"{f}: field '{field.name}' expected {field.type}, got {got} (table {schema.name})")


def stage_output_files(root: str | Path, subdir: str, schema: Table | None = None,
                       fields: Iterable[str] | None = None, *, kind: str | tuple[str, ...] | None = None,
                       manifest: dict | None = None) -> list[Path]:
    """The files of a finished stage output under ``subdir`` (a directory, or one file) that a
    reader may use (see the module docstring), each checked against ``schema`` (``fields``: only
    these), naming the file and the field on a mismatch (:class:`BadInputError`)."""
    root = Path(root)
    manifest = manifest if manifest is not None else read_manifest(root, kind)
    prefix = subdir.rstrip("/") + "/"

    def under(f: str) -> bool:
        return f == subdir or f.startswith(prefix)

    marked, claimed = set(), set()
    for path in sorted((root / "_tasks").glob("*.json")):
        marker = json.loads(path.read_text())
        files = {f for f in marker.get("files", []) if under(f)}
        claimed |= files
        if marker.get("config_hash") == manifest["config_hash"]:
            marked |= files
    listed = [f for files in manifest["outputs"].values() for f in files if under(f)]
    usable = [f for f in dict.fromkeys(listed) if f in marked or f not in claimed] if listed else sorted(marked)
    files = [root / f for f in usable]
    if schema is not None:
        wanted = set(fields) if fields is not None else set(schema.names)
        for f in files:
            _check_schema(f, schema, wanted)
    return files


def read_stage_output(root: str | Path, subdir: str, schema: Table | None = None,
                      columns: list[str] | None = None, *, kind: str | tuple[str, ...] | None = None) -> pa.Table:
    """The rows of :func:`stage_output_files`, concatenated (``columns``: only these)."""
    manifest = read_manifest(root, kind)
    files = stage_output_files(root, subdir, schema, columns, manifest=manifest)
    if not files:
        counts = manifest.get("counts", {})
        if counts.get("kept") == 0:
            lost = {**manifest.get("dropped_by_reason", {}), "quarantined": counts.get("quarantined", 0)}
            why = ", ".join(f"{k} {v}" for k, v in sorted(lost.items()) if v) or "no input"
            raise BadInputError(f"{root}: the {manifest.get('stage', 'finished')} stage kept 0 of "
                                f"{counts.get('input', 0)} records ({why}): nothing to read")
        raise BadInputError(f"{root}: the finished stage has no '{subdir}' files of marked tasks")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="default")
