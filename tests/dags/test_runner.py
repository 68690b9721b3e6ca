"""The DAG runner wires step outputs into later steps as absolute paths (Ray workers run in
another directory), in DAG order, and records every step in dag.json."""

import json
from pathlib import Path
from types import SimpleNamespace

from dags import runner
from dags.dag import Dag, Step
from foundation.config import frozen


@frozen
class Cfg:
    output: str


def test_relative_output_reaches_every_step_as_absolute_paths(tmp_path, monkeypatch):
    dag = Dag("toy", (Step("a", "corpus"), Step("b", "train mlm", inputs=("a",), init="a/model")))
    (tmp_path / "toy.yaml").write_text("steps:\n  a: {config: a.yaml, input: [raw]}\n  b: {config: b.yaml}\n")
    calls = []

    def build_stage_config(stage, config, inputs, output, sets):
        calls.append(dict(stage=stage, config=config, inputs=inputs, output=output, sets=sets))
        Path(output).mkdir(parents=True)
        return SimpleNamespace(run=lambda cfg: {"counts": {"input": 1}}), Cfg(output=output)

    monkeypatch.setattr(runner, "load_dag", lambda name: dag)
    monkeypatch.setattr(runner, "build_stage_config", build_stage_config)
    monkeypatch.chdir(tmp_path)
    report = runner.run_dag("toy", "toy.yaml", "runs/x", [])
    root = tmp_path / "runs" / "x"
    assert [c["stage"] for c in calls] == ["corpus", "train mlm"]
    assert calls[0]["inputs"] == ["raw"] and calls[0]["output"] == str(root / "a")
    assert calls[1]["inputs"] == [str(root / "a")] and calls[1]["sets"] == [f"init={root / 'a' / 'model'}"]
    assert calls[1]["config"] == str(tmp_path / "b.yaml")
    assert json.loads((root / "dag.json").read_text())["steps"] == report["steps"]
    assert report["steps"]["b"]["counts"] == {"input": 1}


def test_dag_variables_reach_the_steps_and_set_overrides_them(tmp_path):
    """`vars` in a DAG config: `${name}` in a step's `config`, `input` and `set` is its value;
    `--set name=value` (no step prefix) overrides it; an undeclared reference or name is exit 2."""
    import pytest

    from foundation.errors import UsageError

    dag = Dag("toy", (Step("a", "mine"), Step("b", "train trm", inputs=("a",))))
    path = tmp_path / "toy.yaml"
    path.write_text("vars: {init: base-model, sets: data/ft}\n"
                    "steps:\n  a: {config: a.yaml, input: ['${sets}/x'], set: ['model=${init}']}\n"
                    "  b: {config: b.yaml, set: ['init=${init}', 'loop.max_steps=3']}\n")
    cfg = runner.load_dag_config(dag, str(path), [])
    assert cfg.vars == {"init": "base-model", "sets": "data/ft"}
    assert cfg.steps["a"].input == ("data/ft/x",) and cfg.steps["a"].set == ("model=base-model",)
    cfg = runner.load_dag_config(dag, str(path), ["init=other/model-2", "b.loop.max_steps=5"])
    assert cfg.steps["a"].set == ("model=other/model-2",)
    assert cfg.steps["b"].set == ("init=other/model-2", "loop.max_steps=3", "loop.max_steps=5")
    with pytest.raises(UsageError, match="variable of \\['init', 'sets'\\]"):
        runner.load_dag_config(dag, str(path), ["nope=1"])
    path.write_text("vars: {init: m}\nsteps:\n  a: {config: a.yaml, set: ['model=${modle}']}\n  b: {config: b.yaml}\n")
    with pytest.raises(UsageError, match=r"step a refers to \$\{modle\}.*declared: \['init'\]"):
        runner.load_dag_config(dag, str(path), [])
