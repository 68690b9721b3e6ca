"""Inputs named by their content: ``{path, size, fingerprint}`` of a file (:func:`describe_input`)
and how an input set differs from the one a stage pinned at its first run (:func:`diff_inputs`).

A stage that reads files pins its expanded input list in ``_inputs.json``
(:meth:`foundation.ledger.output.StageOutput.pin_inputs`); a rerun over another input set refuses
naming the files added, removed or changed, or, with ``on_input_change: redo``, hands the
difference to the stage, which redoes exactly that.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable

import xxhash

from foundation.errors import BadInputError, StageIOError

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


def diff_inputs(pinned: list[dict], now_: list[dict], *, pinned_base: str | None = None,
                base: str | None = None) -> InputChange:
    """Files added, removed and changed; a file is named by its path, made portable against the base
    of each side (:func:`foundation.ledger.identity.portable_path`): a moved output tree whose files
    are the same is no change."""
    from foundation.ledger.identity import portable_path

    old = {portable_path(e["path"], pinned_base): e for e in pinned}
    new = {portable_path(e["path"], base): e for e in now_}
    return InputChange(
        added=tuple(new[p] for p in sorted(set(new) - set(old))),
        removed=tuple(old[p] for p in sorted(set(old) - set(new))),
        changed=tuple((old[p], new[p]) for p in sorted(set(old) & set(new))
                      if (old[p]["size"], old[p]["fingerprint"]) != (new[p]["size"], new[p]["fingerprint"])))
