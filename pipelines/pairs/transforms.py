"""Beam PTransforms over pair records, for pipelines that compose pairs with other Beam steps:
wiring only. Every DoFn calls a plain function of :mod:`records` or :mod:`checks`; every
``expand()`` only connects transforms. ``mgte pairs`` itself runs its tasks
(:mod:`pipelines.pairs.tasks`) on the shared engines, Beam among them (:mod:`pipelines.engines`)."""

from __future__ import annotations


import apache_beam as beam

from pipelines.pairs.checks import PairChecker
from pipelines.pairs.config import Config, ReaderConfig
from pipelines.pairs.records import pick_survivor, read_pair_records
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
