"""The Beam side of ``mgte pairs``: wiring only. Every DoFn calls a plain function of
:mod:`records`, :mod:`checks` or :mod:`tasks`; every ``expand()`` only connects transforms."""

from __future__ import annotations

import shlex
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq

from foundation.ledger import StageOutput
from pipelines.pairs.checks import PairChecker
from pipelines.pairs.config import Config, ReaderConfig
from pipelines.pairs.records import pick_survivor, read_pair_records
from pipelines.pairs.tasks import write_file_task, write_source_task
from pipelines.readers import Quarantined

QUARANTINE_TAG = "quarantine"
DROPPED_TAG = "dropped"


class _ReadFn(beam.DoFn):
    def __init__(self, reader: ReaderConfig):
        self.reader = reader

    def process(self, path: str):
        for item in read_pair_records(path, self.reader):
            yield beam.pvalue.TaggedOutput(QUARANTINE_TAG, item.row()) if isinstance(item, Quarantined) else item


class ReadPairs(beam.PTransform):
    """File paths -> pair dicts (main output ``pairs``) and quarantine rows (``quarantine``)."""

    def __init__(self, reader: ReaderConfig):
        super().__init__()
        self.reader = reader

    def expand(self, paths):
        return paths | beam.ParDo(_ReadFn(self.reader)).with_outputs(QUARANTINE_TAG, main="pairs")


class _CheckFn(beam.DoFn):
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def setup(self):
        self.check = PairChecker(self.cfg)

    def process(self, pair: dict):
        kept, dropped = self.check(pair)
        yield kept if kept is not None else beam.pvalue.TaggedOutput(DROPPED_TAG, dropped)


class FilterPairs(beam.PTransform):
    """Pair dicts -> PAIR rows (main output ``kept``) and PAIR_DROPPED rows (``dropped``)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def expand(self, pairs):
        return pairs | beam.ParDo(_CheckFn(self.cfg)).with_outputs(DROPPED_TAG, main="kept")


class _SurvivorFn(beam.DoFn):
    def process(self, group):
        _, rows = group
        first, dropped = pick_survivor(rows)
        yield first
        for row in dropped:
            yield beam.pvalue.TaggedOutput(DROPPED_TAG, row)


class DedupPairs(beam.PTransform):
    """PAIR rows -> survivors (main output ``kept``) and `exact_duplicate` rows (``dropped``)."""

    def expand(self, rows):
        return (rows
                | "ByPairHash" >> beam.Map(lambda r: (r["pair_hash"], r))
                | "Group" >> beam.GroupByKey()
                | "Survivor" >> beam.ParDo(_SurvivorFn()).with_outputs(DROPPED_TAG, main="kept"))


class _WriteFileTask(beam.DoFn):
    """(path, {kept, dropped, quarantine}) -> candidates, dropped and quarantine files + marker."""

    def __init__(self, out: StageOutput):
        self.out = out

    def process(self, item):
        path, groups = item
        yield write_file_task(self.out, path, groups["kept"], groups["dropped"], groups["quarantine"])


class _WriteSourceTask(beam.DoFn):
    """(source, {kept, dropped}) -> data/source=NAME/part-*.parquet + duplicates + marker."""

    def __init__(self, out: StageOutput, shard_rows: int):
        self.out = out
        self.shard_rows = shard_rows

    def process(self, item):
        source, groups = item
        marker = write_source_task(self.out, self.shard_rows, source, groups["kept"], groups["dropped"])
        if marker is not None:
            yield marker


def _read_rows(path: str):
    yield from pq.read_table(Path(path)).to_pylist()


def _keyed(pcoll, key: str, label: str):
    return pcoll | label >> beam.Map(lambda r, k=key: (r[k], r))


def _options(cfg: Config):
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(shlex.split(cfg.beam.options))


def run_file_tasks(cfg: Config, out: StageOutput, files: list[str]) -> None:
    """Read + filter every given input file (one Beam pipeline), one file task each."""
    if not files:
        return
    with beam.Pipeline(options=_options(cfg)) as p:
        paths = p | "Files" >> beam.Create(files)
        read = paths | "Read" >> ReadPairs(cfg.reader)
        checked = read.pairs | "Reshuffle" >> beam.Reshuffle() | "Filter" >> FilterPairs(cfg)
        ({"kept": _keyed(checked.kept, "path", "KeyKept"),
          "dropped": _keyed(checked[DROPPED_TAG], "path", "KeyDropped"),
          "quarantine": _keyed(read[QUARANTINE_TAG], "path", "KeyQuarantine"),
          "file": paths | "KeyFile" >> beam.Map(lambda f: (f, None))}
         | "ByFile" >> beam.CoGroupByKey()
         | "WriteFileTask" >> beam.ParDo(_WriteFileTask(out)))


def run_source_tasks(cfg: Config, out: StageOutput, candidates: list[Path]) -> None:
    """Dedup all candidates and write every source without a marker (one Beam pipeline)."""
    if not candidates:
        return
    with beam.Pipeline(options=_options(cfg)) as p:
        rows = p | "Candidates" >> beam.Create([str(c) for c in candidates]) | "ReadRows" >> beam.FlatMap(_read_rows)
        dedup = rows | "Dedup" >> DedupPairs()
        ({"kept": _keyed(dedup.kept, "source", "KeyKept"), "dropped": _keyed(dedup[DROPPED_TAG], "source", "KeyDup")}
         | "BySource" >> beam.CoGroupByKey()
         | "WriteSourceTask" >> beam.ParDo(_WriteSourceTask(out, cfg.shard_rows)))
