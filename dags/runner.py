"""``mgte dag run NAME --config C --output DIR``: run a DAG's steps in order, rebuilding only stale ones.

``dag.json`` records per step: status (done / skipped / disabled / failed / not reached), why, the
stage's config hash, the identities of its upstream outputs, its own output identity, seconds and
counts. Lineage rules and where stale outputs go: dags/lineage.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import logging
import time
from pathlib import Path

from dags.registry import build_stage_config
from foundation.config import apply_overrides, build, frozen, read_yaml
from dags.dag import Dag
from dags.lineage import (decide, input_identity, move_aside, output_identity, pinned_config_hash,
                           settings_hash, upstream_steps)
from foundation.errors import StageConflict, UsageError
from foundation.ledger import atomic_write_json, output_lock, read_manifest

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
    # DAG-level variables: ``${name}`` in a step's ``config``, ``input`` and ``set`` entries is their
    # value; ``--set name=value`` (no step prefix) overrides one (e.g. the finetune DAG's ``init``)
    vars: dict[str, str] = dataclasses.field(default_factory=dict)


VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_-]*)\}")


def _substitute(cfg: DagConfig, path: str) -> DagConfig:
    """Each step's ``${name}`` references replaced by the DAG's variables (an unknown one is an error
    naming the step, the file and the declared variables)."""
    def sub(text: str, step: str) -> str:
        def one(m: re.Match) -> str:
            if m.group(1) not in cfg.vars:
                raise UsageError(f"{path}: step {step} refers to ${{{m.group(1)}}}, which `vars` does not declare "
                                 f"(declared: {sorted(cfg.vars) or 'none'})")
            return cfg.vars[m.group(1)]
        return VAR.sub(one, text)

    steps = {name: dataclasses.replace(sc, config=sub(sc.config, name), input=tuple(sub(i, name) for i in sc.input),
                                       set=tuple(sub(x, name) for x in sc.set))
             for name, sc in cfg.steps.items()}
    return dataclasses.replace(cfg, steps=steps)


def load_dag(name: str) -> Dag:
    try:
        module = importlib.import_module(f"dags.{name.replace('-', '_')}")
    except ModuleNotFoundError:
        raise UsageError(f"no DAG named {name!r} (expected dags/{name}.py)") from None
    return module.DAG


def load_dag_config(dag: Dag, path: str, overrides: list[str]) -> DagConfig:
    raw = read_yaml(path)
    steps = dict(raw.get("steps") or {})
    variables = dict(raw.get("vars") or {})
    step_names = {s.name for s in dag.steps}
    for item in overrides:  # "<step>.<key>=v" goes to that step's --set list; "<step>.enabled=false" too
        name, eq, value = item.partition("=")
        if eq and "." not in name and name in variables:  # "<var>=v": a DAG-level variable
            variables[name] = value
            continue
        head, _, rest = item.partition(".")
        if head not in step_names or not rest:
            known = f" or <var>=<value> with a variable of {sorted(variables)}" if variables else ""
            raise UsageError(f"--set {item!r}: expected <step>.<key>=<value> with a step of {sorted(step_names)}"
                             f"{known}")
        entry = dict(steps.get(head) or {})
        if rest.startswith("enabled="):
            entry = apply_overrides(entry, [rest])
        else:
            entry["set"] = list(entry.get("set") or []) + [rest]
        steps[head] = entry
    cfg = _substitute(build(DagConfig, {**raw, "steps": steps, "vars": variables}, source=path), path)
    unknown = sorted(set(cfg.steps) - step_names)
    if unknown:
        raise UsageError(f"{path}: steps {unknown} are not steps of DAG {dag.name} ({sorted(step_names)})")
    missing = sorted(step_names - set(cfg.steps))
    if missing:
        raise UsageError(f"{path}: no config for steps {missing} of DAG {dag.name}")
    return cfg


def _step_record(step, stage_cfg, status: str, why: str, upstream: dict, settings: str, t0: float | None,
                 manifest: dict | None, **more) -> dict:
    root = Path(stage_cfg.output)
    return {"status": status, "why": why, "stage": step.stage, "output": str(root),
            "config_hash": (manifest or {}).get("config_hash") or pinned_config_hash(root),
            "upstream": upstream, "identity": output_identity(root, upstream), "settings": settings,
            "seconds": round(time.time() - t0, 1) if t0 is not None else 0.0,
            "counts": (manifest or {}).get("counts"), **more}


def _run_step(step, module, stage_cfg, prev: dict | None, upstream: dict, settings: str,
              save) -> dict:
    """Decide, move a stale output aside if needed, run the stage; the step's dag.json record."""
    root = Path(stage_cfg.output)
    action, why = decide(prev, upstream, settings, root)
    if action == "skip":
        manifest = read_manifest(root)
        return _step_record(step, stage_cfg, "skipped", why, upstream, settings, None, manifest)
    more: dict = {}
    old_identity, old_hash = output_identity(root, upstream), pinned_config_hash(root)
    if action == "rebuild":
        more["moved_aside"] = str(move_aside(root))
    # until the stage has answered, a "check" step keeps its old settings: a crash now must not
    # leave the old output looking up to date for the new config
    save(_step_record(step, stage_cfg, "running", why, upstream,
                      (prev or {}).get("settings") if action == "check" else settings, None, None, **more))
    t0 = time.time()
    try:
        manifest = module.run(stage_cfg) or {}
    except StageConflict as exc:  # the stage refuses its changed config in this directory
        if action != "check":
            raise
        log.info("step %s: %s; moving the old output aside", step.name, exc)
        more["moved_aside"] = str(move_aside(root))
        manifest = module.run(stage_cfg) or {}
        why = f"config changed (hash {old_hash} -> {manifest.get('config_hash')})"
    else:
        if action == "check":
            if output_identity(root, upstream) == old_identity:  # the stage's own hash ignores what changed
                return _step_record(step, stage_cfg, "skipped",
                                    "up to date (only keys that do not change the output changed)",
                                    upstream, settings, None, manifest)
            why = f"config changed (hash {old_hash} -> {manifest.get('config_hash')})"
    return _step_record(step, stage_cfg, "done", why, upstream, settings, t0, manifest, **more)


def _step_config(step, sc, root: Path, cfg_dir: Path):
    """The step's stage module and config, upstream outputs wired in as absolute paths."""
    inputs = [str(root / ref) for ref in step.inputs] or list(sc.input)
    sets = list(sc.set)
    if step.init:
        sets.append(f"init={root / step.init}")
    if step.model:
        sets.append(f"model={root / step.model}")
    if step.reranker:
        sets.append(f"reranker={root / step.reranker}")
    try:
        return build_stage_config(step.stage, str(cfg_dir / sc.config), inputs or None, str(root / step.name), sets)
    except UsageError as exc:
        raise type(exc)(f"step {step.name}: {exc}") from None


def _prepare_and_run(step, sc, module, stage_cfg, done: dict, prev: dict | None, save) -> dict:
    """The step's lineage; run it if it is stale."""
    upstream = {u: done.get(u, {}).get("identity") for u in upstream_steps(step)}
    if not step.inputs:
        upstream.update({f"input:{p}": input_identity(p) for p in sc.input})
    # the evaluation sets a data stage decontaminates against are outside data it reads (pipelines/decontam.py)
    upstream.update({f"decontaminate:{p}": input_identity(p) for p in getattr(stage_cfg, "decontaminate", ()) or ()})
    log.info("dag: step %s (%s) -> %s", step.name, step.stage, stage_cfg.output)
    with output_lock(stage_cfg.output):  # held while the step decides, moves aside and runs the stage
        return _run_step(step, module, stage_cfg, prev, upstream, settings_hash(stage_cfg), save)


def check_outside_models(built: dict, root: Path) -> None:
    """Every model a step names that no earlier step builds (``model``, ``init``, ``reranker`` set in
    its config: a hub name, a bundled or a user's directory) is checked before step 1 runs
    (:func:`pipelines.embedding.resolve.check_model`); the DAG's own models are checked by their
    stage when it starts, once they exist."""
    from pipelines.embedding.resolve import check_model

    for step, (_module, cfg) in built.items():
        for key in ("model", "init", "reranker"):
            name = getattr(cfg, key, None)
            if not isinstance(name, str) or not name or name == "random":
                continue
            if Path(name).is_absolute() and Path(name).resolve().is_relative_to(root):
                continue
            try:
                check_model(key, name, verify=getattr(cfg, "verify_model", True), encoder_only=key == "init")
            except UsageError as exc:
                raise type(exc)(f"step {step}: {exc}") from None


def _read_previous(path: Path) -> dict:
    try:
        return json.loads(path.read_text()).get("steps") or {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); move it away to rebuild every step") from None


def run_dag(name: str, config: str, output: str, overrides: list[str]) -> dict:
    """Run the DAG's steps in order, rebuilding only what is stale (see dags/lineage.py)."""
    dag = load_dag(name)
    cfg = load_dag_config(dag, config, overrides)
    root, cfg_dir = Path(output).resolve(), Path(config).resolve().parent
    # every enabled step's config is built (and so checked) before step 1 runs
    built = {step.name: _step_config(step, cfg.steps[step.name], root, cfg_dir)
             for step in dag.steps if cfg.steps[step.name].enabled}
    check_outside_models(built, root)
    with output_lock(root, f"mgte dag run {name}"):  # one run of a DAG per output root
        return _run_locked(name, dag, cfg, built, root, config)


def _run_locked(name: str, dag: Dag, cfg: DagConfig, built: dict, root: Path, config: str) -> dict:
    previous = _read_previous(root / "dag.json")
    report: dict = {"dag": name, "config": str(config), "vars": dict(cfg.vars), "steps": {}}

    def save(record=None, step_name=None):
        if record is not None:
            report["steps"][step_name] = record
        atomic_write_json(root / "dag.json", report)

    for i, step in enumerate(dag.steps):
        sc = cfg.steps[step.name]
        if not sc.enabled:
            log.info("dag %s: step %s disabled", name, step.name)
            prev = previous.get(step.name, {})
            save({**prev, "status": "disabled", "why": "enabled: false",
                  "identity": output_identity(root / step.name, prev.get("upstream"))}, step.name)
            continue
        try:  # a failure anywhere here keeps the lineage of the steps not reached
            record = _prepare_and_run(step, sc, *built[step.name], report["steps"], previous.get(step.name),
                                      lambda r, n=step.name: save(r, n))
        except BaseException as exc:
            failed = {**report["steps"].get(step.name, previous.get(step.name, {})), "status": "failed",
                      "error": " ".join(str(exc).split())}
            save(failed, step.name)
            for later in dag.steps[i + 1:]:  # they are still what they were
                if later.name in previous:
                    save({**previous[later.name], "status": "not reached",
                          "why": f"the run stopped at step {step.name}"}, later.name)
            raise
        log.info("dag %s: step %s %s: %s", name, step.name, record["status"], record["why"])
        save(record, step.name)
    evals = {name: info["output"] for name, info in report["steps"].items()
             if info.get("stage") == "eval" and info.get("status") in ("done", "skipped")}
    if evals:  # the build ends with one page comparing every evaluated model
        from pipelines.eval.report import record_in_model_cards, write_comparison

        report["comparison"] = str(write_comparison(evals, root / "report"))
        for model_dir in record_in_model_cards(evals, root):  # the DAG's own models' cards get their metrics
            log.info("dag %s: held-out metrics in %s", name, model_dir / "README.md")
        save()
        log.info("dag %s: evaluation report %s", name, report["comparison"])
    print(json.dumps({k: f"{v['status']}: {v.get('why', '')}" for k, v in report["steps"].items()}, indent=1))
    return report


__all__ = ["run_dag"]
