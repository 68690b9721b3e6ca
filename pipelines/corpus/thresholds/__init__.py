"""The per-language thresholds table of the ``web`` quality profile (``web.yaml``, written by
:mod:`pipelines.corpus.thresholds.build` from FineWeb-2's per-language configs plus ours).

:func:`default_table` reads it once per process; :func:`freeze` makes any table (the default, or
one with ``--set quality.thresholds.<lang>.<key>=v`` changes) hashable for the config.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from foundation.config import FrozenDict

TABLE = Path(__file__).with_name("web.yaml")


class Table(FrozenDict):
    """A :class:`FrozenDict` that computes its hash once: the stage looks its filters up by the
    quality config for every document, and hashing 75 nested entries costs ~0.5 ms."""

    def __hash__(self) -> int:  # type: ignore[override]
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = super().__hash__()
            object.__setattr__(self, "_hash", cached)
        return cached

    def __reduce__(self):
        return (Table, (dict(self),))


def _frozen(value):
    if isinstance(value, dict):
        return Table({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def freeze(table: dict) -> Table:
    """``{lang: {key: value}}`` with lists as tuples and mappings as :class:`FrozenDict`."""
    return _frozen(table)


@functools.lru_cache(maxsize=1)
def default_table() -> Table:
    data = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("languages"), dict):
        raise ValueError(f"{TABLE}: expected a mapping with a `languages` mapping")
    return freeze(data["languages"])
