"""Tables of the contrastive pair stage (``mgte pairs``), read by ``mgte train cpt``.

Quarantined records use the shared :data:`storage_schemas.corpus.QUARANTINE` table.
"""

import pyarrow as pa

from storage_schemas.base import Table, col

PAIR = Table("pair", "A kept (query, positive) pair; shards are grouped by `source` (one source per batch).", pa.schema([
    col("pair_id", pa.string(), "the record's `id`, else `<file name>:<line>` (row for parquet)"),
    col("query", pa.string(), "NFC text of the query side (title, question, source sentence), stripped"),
    col("positive", pa.string(), "NFC text of the positive document (body, answer, translation), stripped"),
    col("source", pa.string(), "pair source name (the record's `source`, else the input file's stem)"),
    col("lang", pa.string(), "declared or identified language; `xx-yy` for a pair whose sides differ"),
    col("query_hash", pa.string(), "xxh3-128 of the normalised query (in-batch duplicate key)"),
    col("positive_hash", pa.string(), "xxh3-128 of the normalised positive (in-batch duplicate key)"),
    col("pair_hash", pa.string(), "xxh3-128 of normalised query + positive (exact-dedup key, unique per output)"),
    col("query_tokens", pa.int32(), "query tokens with special tokens, before truncation (null: no tokenizer)",
        nullable=True),
    col("positive_tokens", pa.int32(), "positive tokens with special tokens, before truncation (null: no tokenizer)",
        nullable=True),
    col("query_truncated", pa.bool_(), "query is longer than the configured query max tokens (512)"),
    col("positive_truncated", pa.bool_(), "positive is longer than the configured document max tokens (1024)"),
    col("path", pa.string(), "input file"),
    col("line", pa.int64(), "1-based line (JSONL) or 0-based row (parquet) in `path`"),
]))

PAIR_DROPPED = Table("pair_dropped", "A pair read correctly but not kept, with the reason and the scores behind it.",
                     pa.schema([
    col("pair_id", pa.string(), "pair id"),
    col("reason", pa.string(), "why: empty_query, empty_positive, identical_query_positive, over_long_query, "
        "over_long_positive, lang_not_in_set, lang_mismatch, eval_overlap, exact_duplicate"),
    col("source", pa.string(), "pair source name"),
    col("lang", pa.string(), "declared language (null when none)", nullable=True),
    col("duplicate_of", pa.string(), "for exact duplicates: pair_id of the kept survivor", nullable=True),
    col("scores", pa.string(), "the numbers behind the decision (token counts, identified languages), JSON",
        nullable=True),
    col("path", pa.string(), "input file"),
    col("line", pa.int64(), "line/row in `path`"),
    col("query", pa.string(), "the query (truncated to 1,000 chars) for audits", nullable=True),
    col("positive", pa.string(), "the positive (truncated to 1,000 chars) for audits", nullable=True),
]))

PAIR_SOURCE_STATS = Table("pair_source_stats", "Per-source counts of the kept pairs and the eq. 1 batch-sampling table.",
                          pa.schema([
    col("source", pa.string(), "pair source name"),
    col("pairs", pa.int64(), "kept pairs n_i"),
    col("query_truncated", pa.int64(), "kept pairs whose query exceeds the query max tokens"),
    col("positive_truncated", pa.int64(), "kept pairs whose positive exceeds the document max tokens"),
    col("p", pa.float64(), "p_i = n_i / sum_j n_j"),
    col("q", pa.float64(), "q_i = p_i^alpha / sum_j p_j^alpha (mGTE eq. 1): the chance a batch comes from here"),
    col("alpha", pa.float64(), "the alpha used (0.5 in the paper)"),
]))
