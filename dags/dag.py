"""DAG = named steps; each step runs one stage on the outputs of earlier steps.

A DAG file (``dags/<name>.py``) says only which stage reads which artifact (wiring); its config
(``dags/configs/<name>/*.yaml``) says which stage config each step uses. Steps write to
``OUTPUT/<step>/`` and are restartable; rerunning a DAG redoes unfinished steps and steps whose
upstream outputs, outside inputs or config changed, and skips the rest (dags/lineage.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    name: str
    stage: str  # a key of dags.cli.STAGES, e.g. "corpus", "train mlm"
    inputs: tuple[str, ...] = ()  # "<step>" or "<step>/<subpath>" of earlier steps; empty = the config's input
    init: str | None = None  # "<step>/<subpath>": the model this step starts from (sets `init`)
    model: str | None = None  # "<step>/<subpath>": the model this step uses (sets `model`)
    reranker: str | None = None  # "<step>/<subpath>": the cross-encoder this step reranks with (sets `reranker`)

    def refs(self) -> tuple[str, ...]:
        """Every "<step>/<subpath>" this step reads, in order."""
        return tuple(r for r in (*self.inputs, self.init, self.model, self.reranker) if r)


@dataclass(frozen=True)
class Dag:
    name: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    def __post_init__(self):
        seen: set[str] = set()
        for step in self.steps:
            for ref in step.refs():
                if ref.split("/")[0] not in seen:
                    raise ValueError(f"DAG {self.name}: step {step.name} reads {ref!r} before it is built")
            seen.add(step.name)
