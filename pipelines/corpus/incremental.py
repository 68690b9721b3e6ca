"""Incremental corpus builds: ``previous: [DIR, ...]`` names earlier corpus outputs.

A build reads only its own inputs and de-duplicates them, exact and near, against every
candidate of the previous builds, read from their ``index/`` tables (ids, text hashes and MinHash
signatures, no text). Previous rows take part in the same de-duplication as this build's with keys
that sort first (``build`` 0.. oldest first, this build last), so an earlier build's copy always
survives, and only this build's records are decided. Because the index holds every candidate (kept,
quality-rejected and duplicate alike), a build against ``previous`` decides as one build over all
inputs would, whenever the previous inputs sort first: the only exception is a new document that
links two clusters an earlier build kept apart (the earlier build cannot take back what it kept).

``previous`` is closed transitively: each output records the builds it was built against
(``manifest.extra.previous``), so naming the last build is enough. A previous output must be a
finished ``corpus`` output with the same dedup settings (and Unicode form, which the text hashes
depend on) and an ``index/``; anything else is refused with one line naming the directory.
"""

from __future__ import annotations

from pathlib import Path

from foundation.config import config_to_dict
from foundation.errors import BadInputError, ConfigError
from foundation.ledger import read_manifest, read_stage_output, stage_output_files
from pipelines.corpus.stats import combine_stats
from storage_schemas.corpus import DEDUP_INDEX, LANG_STATS

STATS = "stats/lang_stats.parquet"


def _dedup_settings(config: dict) -> dict:
    return {"dedup": config.get("dedup"), "normalize.unicode_form": (config.get("normalize") or {}).get("unicode_form")}


def _check(path: Path, manifest: dict, ours: dict) -> None:
    if manifest.get("stage") != "corpus":
        raise ConfigError(f"previous: {path} is a '{manifest.get('stage')}' output, not a corpus output")
    theirs = _dedup_settings(manifest["config"])
    for key in ("dedup", "normalize.unicode_form"):
        if theirs[key] != ours[key]:
            diff = ([f"dedup.{k}: {theirs[key].get(k)} there, {v} here" for k, v in ours[key].items()
                     if theirs[key].get(k) != v] if isinstance(ours[key], dict) and isinstance(theirs[key], dict)
                    else [f"{key}: {theirs[key]} there, {ours[key]} here"])
            raise ConfigError(f"previous: {path} was built with other dedup settings ({'; '.join(diff)}); "
                              "an incremental build needs the same ones: rebuild it or use its settings")
    if "dedup_index" not in manifest.get("outputs", {}):
        raise ConfigError(f"previous: {path} has no dedup index (built before incremental builds existed); "
                          "rebuild it with this version")


def _record(path: Path, manifest: dict) -> dict:
    """A previous build, its files through the one reader of stage outputs (marked tasks only,
    schema checked)."""
    index = stage_output_files(path, "index", DEDUP_INDEX, manifest=manifest)
    stats = stage_output_files(path, STATS, LANG_STATS, manifest=manifest)
    return {"path": str(path), "config_hash": manifest["config_hash"], "finished": manifest["finished"],
            "kept": manifest["counts"]["kept"], "index": [str(f) for f in index], "lang_stats": [str(f) for f in stats]}


def resolve_previous(cfg) -> list[dict]:
    """The previous builds (transitively, oldest first, each once) as records ``{path,
    config_hash, finished, kept, index, lang_stats}``; refuses unusable ones (one line)."""
    ours = _dedup_settings(config_to_dict(cfg))
    own = Path(cfg.output).resolve() if cfg.output else None
    builds: dict[str, dict] = {}
    for entry in cfg.previous:
        path = Path(entry).resolve()
        if path == own:
            raise ConfigError(f"previous: {entry} is this build's own output")
        try:
            manifest = read_manifest(path)
        except BadInputError:
            raise ConfigError(f"previous: {entry} is not a finished corpus output (no _SUCCESS/manifest.json); "
                              "finish that build first or leave it out") from None
        _check(path, manifest, ours)
        for earlier in manifest.get("extra", {}).get("previous", []):
            try:
                now = _record(Path(earlier["path"]), read_manifest(earlier["path"], "corpus"))
            except BadInputError:
                now = None
            if now is None or now["index"] != earlier["index"]:
                raise ConfigError(f"previous: {earlier['path']} (a previous build of {entry}) is gone or moved; "
                                  "an incremental build needs every earlier build's index/")
            builds.setdefault(earlier["path"], earlier)
        builds.setdefault(str(path), _record(path, manifest))
    return sorted(builds.values(), key=lambda b: b["finished"])


def previous_index_items(builds: list[dict]) -> list[tuple[str, int]]:
    """``(index file, build number)`` of the previous builds, oldest build = 0."""
    return [(f, rank) for rank, b in enumerate(builds) for f in b["index"]]


def cumulative_stats(builds: list[dict], own_rows: list[dict], alpha: float) -> list[dict]:
    """The eq. 1 table over the kept documents of every build (previous ones and this one)."""
    tables = [read_stage_output(b["path"], STATS, LANG_STATS).to_pylist() for b in builds if b["lang_stats"]]
    return combine_stats([*tables, own_rows], alpha)
