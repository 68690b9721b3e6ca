"""Tables of the MLM shard stage (``mgte mlm-shards``)."""

import pyarrow as pa

from storage_schemas.base import Table, col

MLM_CHUNK = Table("mlm_chunk", "One tokenised MLM training sequence: a document or a max-length piece of one.", pa.schema([
    col("id", pa.string(), "chunk id: `<doc id>#<chunk index>`"),
    col("doc_id", pa.string(), "id of the clean document it comes from"),
    col("lang", pa.string(), "language of the document (mGTE code); also the shard directory `lang=xx`"),
    col("chunk", pa.int32(), "0-based index of this chunk within its document"),
    col("n_chunks", pa.int32(), "chunks the document was split into"),
    col("n_tokens", pa.int32(), "len(input_ids), special tokens included (<= max_len)"),
    col("doc_tokens", pa.int64(), "tokens of the whole document, special tokens excluded"),
    col("input_ids", pa.list_(pa.int32()), "token ids: <s> text-piece </s>; never padded"),
    col("source", pa.string(), "the document's source"),
]))

MLM_DROPPED = Table("mlm_dropped", "A clean document that produced no MLM chunk, and why.", pa.schema([
    col("id", pa.string(), "document id"),
    col("reason", pa.string(), "empty_after_tokenize or downsampled_short"),
    col("lang", pa.string(), "document language", nullable=True),
    col("doc_tokens", pa.int64(), "tokens of the document, special tokens excluded"),
    col("keep_score", pa.float64(), "for downsampled_short: the deterministic hash score in [0, 1) compared "
        "with the keep rate", nullable=True),
]))

MLM_SHARD_STATS = Table("mlm_shard_stats", "Per-language chunk counts of an `mgte mlm-shards` output.", pa.schema([
    col("lang", pa.string(), "mGTE language code"),
    col("docs", pa.int64(), "documents kept"),
    col("chunks", pa.int64(), "chunks (training sequences)"),
    col("tokens", pa.int64(), "tokens over all chunks, special tokens included"),
    col("q", pa.float64(), "eq. 1 sampling probability of the language from the corpus stage, renormalised "
        "over the languages present here"),
]))
