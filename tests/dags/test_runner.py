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
