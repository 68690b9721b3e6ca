"""``manifest.json`` (one per stage output, written last) and per-task markers."""

from __future__ import annotations

MANIFEST_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "stage": (str, "stage name, e.g. `corpus`"),
    "config": (dict, "the resolved config (every key, defaults filled in)"),
    "config_hash": (str, "sha256 prefix of the resolved config; a rerun with another hash refuses"),
    "inputs": (list, "input files: [{path, size}]"),
    "counts": (dict, "{input, kept, dropped, quarantined}; input == kept + dropped + quarantined"),
    "dropped_by_reason": (dict, "{reason: n}; sums to counts.dropped"),
    "outputs": (dict, "{table: [relative file paths]}"),
    "code_version": (str, "package version and git commit when known"),
    "started": (str, "ISO-8601 UTC"),
    "finished": (str, "ISO-8601 UTC"),
    "extra": (dict, "stage-specific facts (engine, timings, statistics)"),
}

TASK_MARKER_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "task": (str, "task name, the unit of retry (e.g. one input file)"),
    "config_hash": (str, "hash of the config that produced it"),
    "counts": (dict, "{input, kept, dropped, quarantined} of this task"),
    "files": (list, "files this task wrote, relative to the stage output"),
}


class ManifestError(ValueError):
    pass


def check_counts(counts: dict, dropped_by_reason: dict | None = None, *, where: str = "manifest") -> None:
    """The accounting invariant: input = kept + dropped + quarantined (and reasons sum up)."""
    for key in ("input", "kept", "dropped", "quarantined"):
        if not isinstance(counts.get(key), int) or counts[key] < 0:
            raise ManifestError(f"{where}: counts.{key} must be a non-negative integer, got {counts.get(key)!r}")
    if counts["input"] != counts["kept"] + counts["dropped"] + counts["quarantined"]:
        raise ManifestError(f"{where}: input {counts['input']} != kept {counts['kept']} + dropped "
                            f"{counts['dropped']} + quarantined {counts['quarantined']}")
    if dropped_by_reason is not None and sum(dropped_by_reason.values()) != counts["dropped"]:
        raise ManifestError(f"{where}: dropped_by_reason sums to {sum(dropped_by_reason.values())}, "
                            f"counts.dropped is {counts['dropped']}")


def _check_fields(obj: dict, spec: dict, where: str) -> None:
    for key, (tp, _doc) in spec.items():
        if key not in obj:
            raise ManifestError(f"{where}: missing field '{key}'")
        if not isinstance(obj[key], tp):
            raise ManifestError(f"{where}: field '{key}' must be {tp}, got {type(obj[key]).__name__}")


def validate_manifest(obj: dict, where: str = "manifest.json") -> dict:
    _check_fields(obj, MANIFEST_FIELDS, where)
    check_counts(obj["counts"], obj["dropped_by_reason"], where=where)
    return obj


def validate_task_marker(obj: dict, where: str = "task marker") -> dict:
    _check_fields(obj, TASK_MARKER_FIELDS, where)
    check_counts(obj["counts"], where=where)
    return obj
