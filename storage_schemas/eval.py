"""Tables of the evaluation stage (``mgte eval``).

The run itself is also written as TREC text (``run.trec``, ``runs/<method>.trec``); ``EVAL_RUN`` is
the same ranking as a table, so reports can join it with queries and documents. Malformed input
lines go to ``storage_schemas.corpus.QUARANTINE`` (path, line, field, error, raw).
"""

import pyarrow as pa

from storage_schemas.base import Table, col

EVAL_RUN = Table("eval_run", "One retrieved document of one query, for one retrieval method.", pa.schema([
    col("method", pa.string(), "dense, sparse, hybrid, rerank or bm25"),
    col("query_id", pa.string(), "BEIR query `_id`"),
    col("doc_id", pa.string(), "BEIR corpus `_id`"),
    col("rank", pa.int32(), "1-based rank in trec_eval order (score descending, then doc id descending)"),
    col("score", pa.float64(), "the score written to the TREC run: a float32 value (trec_eval compares C floats)"),
]))

EVAL_QUERY_METRICS = Table("eval_query_metrics", "Per-query metrics of one method (trec_eval semantics).", pa.schema([
    col("method", pa.string(), "retrieval method"),
    col("query_id", pa.string(), "query evaluated (present in both the run and the qrels)"),
    col("lang", pa.string(), "query language (`lang` field, else the language of its judged documents, else `und`)"),
    col("ndcg@10", pa.float64(), "trec_eval ndcg_cut_10"),
    col("recall@10", pa.float64(), "trec_eval recall_10"),
    col("recall@20", pa.float64(), "trec_eval recall_20"),
    col("recall@100", pa.float64(), "trec_eval recall_100"),
    col("mrr@10", pa.float64(), "trec_eval recip_rank over the 10 best documents"),
    col("map", pa.float64(), "trec_eval map over the whole run"),
    col("num_rel", pa.int64(), "judged relevant documents (grade >= 1)"),
    col("num_ret", pa.int64(), "documents in the run"),
]))

EVAL_DROPPED = Table("eval_dropped", "An input record read correctly but not used, with the reason.", pa.schema([
    col("kind", pa.string(), "`query`, `doc` or `qrel`"),
    col("id", pa.string(), "query or document id (for qrels: `query-id/corpus-id`)"),
    col("reason", pa.string(), "no_qrels, empty_text, duplicate_id or duplicate_qrel"),
    col("path", pa.string(), "input file"),
    col("line", pa.int64(), "1-based line in `path`"),
]))
