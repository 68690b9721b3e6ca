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


def _frozen(value):
    if isinstance(value, dict):
        return FrozenDict({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def freeze(table: dict) -> FrozenDict:
    """``{lang: {key: value}}`` with lists as tuples and mappings as :class:`FrozenDict`."""
    return _frozen(table)


@functools.lru_cache(maxsize=1)
def default_table() -> FrozenDict:
    data = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("languages"), dict):
        raise ValueError(f"{TABLE}: expected a mapping with a `languages` mapping")
    return freeze(data["languages"])
