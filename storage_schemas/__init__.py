"""Every table mgte writes, defined once (pyarrow schemas with a doc per field).

Readers and writers validate against these; ``docs/ARCHITECTURE.md`` lists which stage writes
which table.
"""

from storage_schemas.base import SchemaError, Table, col
from storage_schemas.corpus import CANDIDATE, CLEAN_DOC, DEDUP_DECISION, DROPPED, LANG_STATS, QUARANTINE, RAW_DOC
from storage_schemas.eval import EVAL_DROPPED, EVAL_QUERY_METRICS, EVAL_RUN
from storage_schemas.manifest import (
    ManifestError,
    check_counts,
    validate_manifest,
    validate_task_marker,
)
from storage_schemas.mine import HARD_NEGATIVES, HARD_NEGATIVES_DROPPED
from storage_schemas.mlm import MLM_CHUNK, MLM_DROPPED, MLM_SHARD_STATS
from storage_schemas.pairs import PAIR, PAIR_DROPPED, PAIR_SOURCE_STATS

__all__ = [
    "CANDIDATE", "CLEAN_DOC", "DEDUP_DECISION", "DROPPED", "LANG_STATS", "QUARANTINE", "RAW_DOC",
    "EVAL_DROPPED", "EVAL_QUERY_METRICS", "EVAL_RUN",
    "HARD_NEGATIVES", "HARD_NEGATIVES_DROPPED",
    "MLM_CHUNK", "MLM_DROPPED", "MLM_SHARD_STATS",
    "PAIR", "PAIR_DROPPED", "PAIR_SOURCE_STATS",
    "ManifestError", "SchemaError", "Table", "check_counts", "col", "validate_manifest", "validate_task_marker",
]
