"""``mgte dag run NAME --config C --output DIR``: run a DAG's steps in order."""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path

from dags.registry import build_stage_config
from foundation.config import apply_overrides, build, frozen, read_yaml
from dags.dag import Dag
from foundation.errors import UsageError
from foundation.ledger import atomic_write_json

log = logging.getLogger("mgte.dag")


@frozen
class StepConfig:
    config: str  # stage config YAML, relative to the DAG config file
    input: tuple[str, ...] = ()  # for steps that read outside data (relative to the working directory)
    set: tuple[str, ...] = ()  # --set overrides for the stage
    enabled: bool = True


@frozen
class DagConfig:
    steps: dict[str, StepConfig]


def load_dag(name: str) -> Dag:
    try:
        module = importlib.import_module(f"dags.{name.replace('-', '_')}")
    except ModuleNotFoundError:
        raise UsageError(f"no DAG named {name!r} (expected dags/{name}.py)") from None
    return module.DAG


def load_dag_config(dag: Dag, path: str, overrides: list[str]) -> DagConfig:
    raw = read_yaml(path)
    steps = dict(raw.get("steps") or {})
    step_names = {s.name for s in dag.steps}
    for item in overrides:  # "<step>.<key>=v" goes to that step's --set list; "<step>.enabled=false" too
        head, _, rest = item.partition(".")
        if head not in step_names or not rest:
            raise UsageError(f"--set {item!r}: expected <step>.<key>=<value> with a step of {sorted(step_names)}")
        entry = dict(steps.get(head) or {})
        if rest.startswith("enabled="):
            entry = apply_overrides(entry, [rest])
        else:
            entry["set"] = list(entry.get("set") or []) + [rest]
        steps[head] = entry
    cfg = build(DagConfig, {**raw, "steps": steps}, source=path)
    unknown = sorted(set(cfg.steps) - step_names)
    if unknown:
        raise UsageError(f"{path}: steps {unknown} are not steps of DAG {dag.name} ({sorted(step_names)})")
    missing = sorted(step_names - set(cfg.steps))
    if missing:
        raise UsageError(f"{path}: no config for steps {missing} of DAG {dag.name}")
    return cfg


def run_dag(name: str, config: str, output: str, overrides: list[str]) -> dict:
    dag = load_dag(name)
    cfg = load_dag_config(dag, config, overrides)
    root, cfg_dir = Path(output).resolve(), Path(config).resolve().parent
    report: dict = {"dag": name, "config": str(config), "steps": {}}
    for step in dag.steps:
        sc = cfg.steps[step.name]
        if not sc.enabled:
            log.info("dag %s: step %s disabled", name, step.name)
            report["steps"][step.name] = {"status": "disabled"}
            continue
        inputs = [str(root / ref) for ref in step.inputs] or list(sc.input)
        sets = list(sc.set)
        if step.init:
            sets.append(f"init={root / step.init}")
        if step.model:
            sets.append(f"model={root / step.model}")
        module, stage_cfg = build_stage_config(step.stage, str(cfg_dir / sc.config), inputs or None,
                                               str(root / step.name), sets)
        log.info("dag %s: step %s (%s) -> %s", name, step.name, step.stage, stage_cfg.output)
        t0 = time.time()
        manifest = module.run(stage_cfg) or {}
        report["steps"][step.name] = {"status": "done", "stage": step.stage, "output": stage_cfg.output,
                                      "seconds": round(time.time() - t0, 1), "counts": manifest.get("counts"),
                                      "config_hash": manifest.get("config_hash")}
        atomic_write_json(root / "dag.json", report)
    evals = {name: info["output"] for name, info in report["steps"].items()
             if info.get("stage") == "eval" and info.get("status") == "done"}
    if evals:  # the build ends with one page comparing every evaluated model
        from pipelines.eval.report import write_comparison

        report["comparison"] = str(write_comparison(evals, root / "report"))
        atomic_write_json(root / "dag.json", report)
        log.info("dag %s: evaluation report %s", name, report["comparison"])
    print(json.dumps({k: v.get("counts") for k, v in report["steps"].items()}, indent=1))
    return report


__all__ = ["run_dag"]
