"""Arrow table helpers the data stages share."""

from __future__ import annotations

from collections import defaultdict


def repeated_groups(table, key: str, columns: list[str] | None = None) -> dict:
    """The rows of ``table`` whose ``key`` value occurs twice or more, as Python rows grouped by
    that value (``columns``: the fields of each row, default all). Counting stays in Arrow, so a
    table of unique keys never becomes Python objects: de-duplication touches only its duplicates
    and their survivors."""
    import pyarrow.compute as pc

    counts = table.group_by(key).aggregate([(key, "count")])
    repeated = counts.filter(pc.greater(counts.column(f"{key}_count"), 1)).column(key)
    groups: dict = defaultdict(list)
    if not len(repeated):
        return groups
    picked = table.filter(pc.is_in(table.column(key), value_set=repeated))
    for row in (picked.select(columns) if columns else picked).to_pylist():
        groups[row[key]].append(row)
    return groups
