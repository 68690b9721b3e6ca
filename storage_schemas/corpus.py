"""Tables of the corpus stage (``mgte corpus``)."""

import pyarrow as pa

from storage_schemas.base import Table, col

RAW_DOC = Table("raw_doc", "One record as read from a raw input file, before any decision.", pa.schema([
    col("id", pa.string(), "the record's `id`, or `<file name>:<line>` (row for parquet) when it has none"),
    col("text", pa.string(), "the `text` field as read (UTF-8 decoded, not yet normalised)"),
    col("source", pa.string(), "the record's `source` field, else the input file's name"),
    col("path", pa.string(), "input file the record came from"),
    col("line", pa.int64(), "1-based line (JSONL) or 0-based row (parquet) in `path`"),
    col("metadata", pa.string(), "every other field of the record, as a JSON object", nullable=True),
]))

CLEAN_DOC = Table("clean_doc", "A kept document: normalised, language-identified, de-duplicated.", pa.schema([
    col("id", pa.string(), "document id (from the record, else `<file name>:<line>`)"),
    col("text", pa.string(), "NFC, whitespace-normalised text"),
    col("lang", pa.string(), "one of the 75 mGTE codes (zh-cn and zh-tw are `zh`)"),
    col("lang_score", pa.float32(), "language-identifier probability of `lang`"),
    col("source", pa.string(), "the record's `source`, else the input file's name"),
    col("path", pa.string(), "input file"),
    col("line", pa.int64(), "1-based line (JSONL) or 0-based row (parquet) in `path`"),
    col("n_chars", pa.int64(), "characters of `text`"),
    col("n_bytes", pa.int64(), "UTF-8 bytes of `text`"),
    col("n_tokens", pa.int64(), "tokens of the configured tokenizer (null when none is configured)", nullable=True),
    col("text_hash", pa.string(), "xxh3-128 of the normalised text (exact-duplicate key)"),
    col("metadata", pa.string(), "other fields of the raw record, JSON", nullable=True),
]))

DROPPED = Table("dropped", "A record read correctly but not kept, with the reason and the scores behind it.", pa.schema([
    col("id", pa.string(), "document id"),
    col("reason", pa.string(), "why: empty_text, lang_not_in_set, low_lang_score, exact_duplicate, "
        "near_duplicate, eval_overlap (an evaluation text, see decontaminate), or a quality-filter name such as gopher_short_doc"),
    col("lang", pa.string(), "identified language (raw identifier label when not in the set)", nullable=True),
    col("lang_score", pa.float32(), "identifier probability", nullable=True),
    col("duplicate_of", pa.string(), "for duplicates: id of the kept survivor; for eval_overlap: the evaluation "
        "text, <set>/query|doc/<id>", nullable=True),
    col("similarity", pa.float32(), "for near duplicates: estimated Jaccard to the survivor (eval_overlap: to the "
        "evaluation text, 1.0 when exact)", nullable=True),
    col("scores", pa.string(), "other scores behind the decision, JSON", nullable=True),
    col("path", pa.string(), "input file"),
    col("line", pa.int64(), "line/row in `path`"),
    col("text", pa.string(), "the text (truncated to 2,000 chars) for audits", nullable=True),
]))

QUARANTINE = Table("quarantine", "A record or file that could not be read; nothing is dropped silently.", pa.schema([
    col("path", pa.string(), "input file"),
    col("line", pa.int64(), "1-based line (JSONL), 0-based row (parquet), or -1 for a file-level error", nullable=True),
    col("field", pa.string(), "the offending field (`text`, `<record>`, `<file>`)"),
    col("error", pa.string(), "what is wrong, e.g. `bad_json: Expecting value`"),
    col("raw", pa.string(), "the raw bytes, decoded with replacement and truncated to 1,000 chars", nullable=True),
]))

LANG_STATS = Table("lang_stats", "Per-language statistics of the kept documents and the eq. 1 sampling table.", pa.schema([
    col("lang", pa.string(), "mGTE language code"),
    col("docs", pa.int64(), "kept documents n_i"),
    col("chars", pa.int64(), "characters"),
    col("bytes", pa.int64(), "UTF-8 bytes"),
    col("tokens", pa.int64(), "tokens of the configured tokenizer (null if none)", nullable=True),
    col("p", pa.float64(), "p_i = n_i / sum_j n_j"),
    col("q", pa.float64(), "q_i = p_i^alpha / sum_j p_j^alpha (mGTE eq. 1)"),
    col("alpha", pa.float64(), "the alpha used (0.5 in the paper)"),
]))

CANDIDATE = Table(
    "corpus_candidate",
    "Work table of `mgte corpus` (under `_work/`): a language-identified document waiting for "
    "de-duplication (quality-rejected ones too, so that a near copy of a rejected text goes with it). "
    "Clean-doc fields plus its MinHash signature and the quality verdict.",
    pa.schema(list(CLEAN_DOC.schema) + [
        col("minhash", pa.list_(pa.uint32()), "MinHash signature (bands x rows values); empty when near-dedup is off"),
        col("quality_reason", pa.string(), "the failing quality filter, null when the document passed", nullable=True),
        col("scores", pa.string(), "quality scores, JSON", nullable=True),
    ]),
)

DEDUP_DECISION = Table(
    "corpus_dedup_decision",
    "Work table of `mgte corpus` (`_work/dedup/{exact,near}-<shard>.parquet`, shards by input path): "
    "one row per candidate removed as a duplicate.",
    pa.schema([
        col("path", pa.string(), "input file of the removed document"),
        col("line", pa.int64(), "its line/row"),
        col("reason", pa.string(), "exact_duplicate or near_duplicate"),
        col("duplicate_of", pa.string(), "id of the kept survivor (the earliest record of its cluster)"),
        col("similarity", pa.float32(), "estimated Jaccard to its cluster (1.0 for exact duplicates)"),
    ]),
)

DEDUP_INDEX = Table(
    "corpus_dedup_index",
    "What a later incremental build (`previous: [DIR]`) de-duplicates against, without reading text "
    "(`index/*.parquet` of every corpus output): one row per candidate of the build, i.e. every "
    "language-identified document, kept or not, so that a later build decides exactly as one build "
    "over all inputs would.",
    pa.schema([CANDIDATE.schema.field(name) for name in ("path", "line", "id", "text_hash", "minhash")]),
)
