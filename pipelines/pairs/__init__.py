"""``mgte pairs``: pair sources -> contrastive pair shards, one directory per source (engine: Beam, Ray or local).

Input records are JSONL (optionally .gz) or parquet rows with a query side (``query``) and a
positive side (``positive`` or ``document``), optionally ``id``, ``source`` and ``lang`` (one code,
or ``xx-yy`` for a translation pair). Output::

    DIR/data/source=NAME/part-00000.parquet   PAIR rows of one source (storage_schemas.pairs)
    DIR/dropped/*.parquet                      PAIR_DROPPED rows with their reason
    DIR/quarantine/*.parquet                   QUARANTINE rows (path, line, field, error, raw)
    DIR/stats/source_stats.parquet             per-source counts and the eq. 1 batch-sampling table

The package, one concern a module:

- :mod:`.config`     the typed config (and :func:`raw_config` for reading raw pairs elsewhere)
- :mod:`.records`    raw record -> pair dict, hashes, dedup survivor: where raw pairs become rows
- :mod:`.checks`     :class:`PairChecker`: empty/identical, length and language drops, with reasons
- :mod:`.tasks`      read (per file, named by content), dedup (per hash part) and source tasks
- :mod:`.stage`      :func:`run`: the phases on the stage contract, per-source eq. 1 stats, manifest
- :mod:`.read`       readers of a finished pairs output or raw pair files (CPT, eval)
"""

from pipelines.pairs.checks import PairChecker, load_fast_tokenizer
from pipelines.pairs.config import Config, LangConfig, LimitsConfig, ReaderConfig, raw_config
from pipelines.pairs.read import is_pairs_output, load_pair_inputs, read_pairs, read_raw_pairs
from pipelines.pairs.records import (
    AUDIT_CHARS, file_stem, lang_label, norm_key, pair_hash, parse_lang, parse_pair, pick_survivor,
    read_pair_records, safe_name, split_survivor, survivor_key, text_hash,
)
from pipelines.pairs.stage import STAGE, run, source_stats
from pipelines.pairs.tasks import read_task, source_task

__all__ = [
    "AUDIT_CHARS", "Config", "LangConfig", "LimitsConfig",
    "PairChecker", "ReaderConfig", "STAGE", "file_stem", "read_task",
    "is_pairs_output", "lang_label", "load_fast_tokenizer", "load_pair_inputs", "norm_key", "pair_hash",
    "parse_lang", "parse_pair", "pick_survivor", "raw_config", "read_pair_records", "read_pairs",
    "read_raw_pairs", "run", "safe_name", "source_stats", "source_task", "split_survivor", "survivor_key",
    "text_hash",
]
