"""The corpus dedup task on Apache Beam: the steps of :mod:`pipelines.corpus.dedup_rounds` (the
slice pass, the slices, the clustering rounds and the shards' writes) as tasks chained in a few
pipelines, without a global gather: every value the steps hand on goes through files.

Beam's DirectRunner (the FnApiRunner) keeps every shuffle of a pipeline in the driver's memory
until the pipeline ends, so a GroupByKey of the exact items, of the band items (25 per candidate)
or of the rounds' links would hold them there (session 7: the driver's peak grew with the slices'
buckets, 590 -> 872 MB from 100k to 1M candidates). The pipelines here use no GroupByKey: each
step is ``Create(range(n)) | Map(task)`` (:meth:`pipelines.engines.BeamEngine.run_steps`), spread
over the SDK workers, and waits for the step before it through a side input. On a distributed
runner (Dataflow, Flink, Spark) the steps' files need an output root its workers share."""

from __future__ import annotations

from foundation.errors import MgteError
from foundation.ledger import StageOutput
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup_rounds import dedup_through_files
from pipelines.engines import beam_error


def dedup_beam(engine, files: list[tuple[str, int]], cfg: DedupConfig, out: StageOutput, deps: str,
               build: int = 0) -> None:
    """:func:`~pipelines.corpus.dedup_rounds.dedup_through_files` with each engine run one Beam
    pipeline of chained steps."""
    try:
        dedup_through_files(engine.run_steps, files, cfg, out, deps, build)
    except MgteError:
        raise
    except Exception as exc:  # noqa: BLE001 - Beam wraps the step's error; name it in one line
        raise beam_error(exc, [(f,) for f, _ in files]) from exc

