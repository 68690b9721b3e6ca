"""Tables of hard-negative mining (``mgte mine``), read by ``mgte train trm`` and ``mgte train reranker``.

Quarantined records use the shared :data:`storage_schemas.corpus.QUARANTINE` table. Column
names and types of :data:`HARD_NEGATIVES` are fixed by the user contract (shared/CONTRACT.md).
"""

import pyarrow as pa

from storage_schemas.base import Table, col

HARD_NEGATIVES = Table("hard_negatives", "One query with one positive and its mined hard negatives, best-ranked first.",
                       pa.schema([
    col("query_id", pa.string(), "the record's `query_id`, else a hash of the normalised query text"),
    col("query", pa.string(), "query text"),
    col("positive_id", pa.string(), "id of the positive (`positive_id` / `corpus_id`; null when the input has none)",
        nullable=True),
    col("positive", pa.string(), "positive document text"),
    col("positive_score", pa.float32(), "the miner's score of (query, positive)"),
    col("negative_ids", pa.list_(pa.string()), "candidate ids of the negatives, in `negative_ranks` order"),
    col("negatives", pa.list_(pa.string()), "negative texts, same order"),
    col("negative_ranks", pa.list_(pa.int32()), "1-based ranks (ascending) in the query's ranking of all "
        "candidates with its own positives removed; 0 for a negative the input set gave (not ranked)"),
    col("negative_scores", pa.list_(pa.float32()), "the miner's scores of (query, negative), same order"),
    col("negative_given", pa.list_(pa.bool_()), "per negative, same order: true = given by the input set (kept, "
        "first), false = mined; null = all mined (a table written before this column)", nullable=True),
    col("source", pa.string(), "pair source name"),
    col("lang", pa.string(), "language of the pair (null when unknown)", nullable=True),
    col("miner", pa.string(), "the mining model's id (path or name + fingerprint)"),
]))

HARD_NEGATIVES_DROPPED = Table("hard_negatives_dropped", "A query (with one positive) read correctly but not kept.",
                               pa.schema([
    col("query_id", pa.string(), "query id"),
    col("positive_id", pa.string(), "positive id (null when the input has none)", nullable=True),
    col("reason", pa.string(), "why: too_few_negatives, empty_query, empty_positive, eval_overlap, ..."),
    col("source", pa.string(), "pair source name", nullable=True),
    col("scores", pa.string(), "the numbers behind the decision (candidates passing each rule), JSON",
        nullable=True),
    col("positive_score", pa.float32(), "the miner's score of (query, positive), when it was computed", nullable=True),
    col("query", pa.string(), "the query text, first 1,000 characters (for an audit)", nullable=True),
    col("positive", pa.string(), "the positive text, first 1,000 characters (for an audit)", nullable=True),
    col("path", pa.string(), "input file of the pair record", nullable=True),
    col("line", pa.int64(), "1-based line (JSONL) or 0-based row (parquet) in `path`", nullable=True),
]))
