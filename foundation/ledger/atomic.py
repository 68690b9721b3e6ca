"""The one way any stage writes a file: ``<name>.tmp`` in the destination directory, flushed to
disk (fsync), then renamed over the final name, so a reader (or a rerun) sees the whole file or
none of it (docs/reliability.md rows 1, 2 and 15).

Every write passes the fault point ``before_rename`` (and parquet tables ``write_parquet`` before
writing) for the fault tests (:mod:`foundation.faults`). An ``OSError`` (disk full, permissions)
removes the temporary file and fails as one :class:`StageIOError` naming the final path.
``private=True`` names the temporary file after this process (``<name>.<pid>.tmp``): for a cache
that two runs may fill at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import StageIOError
from foundation.faults import fault_point


def atomic_write(path: str | Path, write: Callable[[Path], None], *, private: bool = False) -> Path:
    """``write(tmp)`` writes the file at ``tmp``; this syncs it and renames it to ``path``."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp" if private else f"{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fault_point("before_rename", str(path))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StageIOError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def atomic_write_parquet(path: str | Path, table: pa.Table, row_group_size: int | None = None) -> None:
    def write(tmp: Path) -> None:
        fault_point("write_parquet", str(path))
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)

    atomic_write(path, write)


class AtomicParquetWriter:
    """A Parquet file written table by table (one table in memory at a time), made visible as
    :func:`atomic_write` makes a file: ``<name>.tmp`` in the destination, fsync and rename at
    :meth:`close`; an error, or :meth:`abort`, removes the temporary file."""

    def __init__(self, path: str | Path, schema: pa.Schema):
        self.path = Path(path)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fault_point("write_parquet", str(self.path))
            self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd")
        except OSError as exc:
            raise StageIOError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def write(self, table: pa.Table) -> None:
        try:
            self.writer.write_table(table)
        except OSError as exc:
            self.abort()
            raise StageIOError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        atomic_write(self.path, lambda tmp: self.writer.close())  # the same tmp name: closed, synced, renamed

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def atomic_write_arrow(path: str | Path, table: pa.Table, max_chunksize: int = 65536) -> None:
    """An uncompressed Arrow IPC file (read by slices, memory-mapped)."""
    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max_chunksize)

    atomic_write(path, write)


def atomic_write_npy(path: str | Path, array, *, private: bool = False) -> None:
    """One numpy array as ``.npy``."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write, private=private)
