"""DAG lineage: a step reruns when an upstream output (or its own config, or its outside input)
changed since its last run, every step below it follows, the rest is skipped; dag.json says why.

The toy stages are real StageOutputs (config pinning, manifest, _SUCCESS) so the runner meets the
stage's own refusal of a changed config, as with the real stages."""

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from dags import registry, runner
from dags.dag import Dag, Step
from foundation.config import frozen
from foundation.ledger import StageOutput, read_manifest

# a (outside input) -> b -> d; c (outside input) -> d (as its model); e independent of a
DAG = Dag("toy", (Step("a", "toy"), Step("b", "toy", inputs=("a",)), Step("c", "toy"),
                  Step("d", "toy", inputs=("b",), model="c/model"), Step("e", "toy")))


@frozen
class ToyConfig:
    input: tuple[str, ...] = ()
    output: str = ""
    model: str | None = None
    value: int = 0
    engine: str = "local"  # a run-only key: the stage's hash ignores it


def _stage(runs: list):
    def run(cfg):
        out = StageOutput(cfg.output, "toy", cfg)
        if out.begin():
            return read_manifest(cfg.output)
        runs.append(Path(cfg.output).name)
        text = "".join(Path(p, "data.txt").read_text() if Path(p).is_dir() and Path(p, "data.txt").exists()
                       else Path(p).read_text() for p in cfg.input) + f"+{cfg.value}"
        (Path(cfg.output) / "data.txt").write_text(text)
        n = len(text)
        return out.finish(counts={"input": n, "kept": n, "dropped": 0, "quarantined": 0}, dropped_by_reason={},
                          inputs=[{"path": p, "size": 0} for p in cfg.input], outputs={"data": ["data.txt"]})

    return SimpleNamespace(Config=ToyConfig, run=run)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    runs: list[str] = []
    module = _stage(runs)
    monkeypatch.setattr(runner, "load_dag", lambda name: DAG)
    monkeypatch.setattr(registry, "stage_module", lambda name: module)
    monkeypatch.chdir(tmp_path)
    for name in ("raw-a", "raw-c", "raw-e"):
        Path(name).write_text(name)
    Path("toy.yaml").write_text("steps:\n  a: {config: s.yaml, input: [raw-a]}\n  b: {config: s.yaml}\n"
                                "  c: {config: s.yaml, input: [raw-c]}\n  d: {config: s.yaml}\n"
                                "  e: {config: s.yaml, input: [raw-e]}\n")
    Path("s.yaml").write_text("value: 0\n")

    def run_dag(*sets, output="out"):
        runs.clear()
        report = runner.run_dag("toy", "toy.yaml", output, list(sets))
        assert json.loads(Path(output, "dag.json").read_text())["steps"] == report["steps"]
        return report["steps"], list(runs)

    return run_dag


def test_first_run_runs_all_second_skips_all(toy):
    steps, ran = toy()
    assert ran == ["a", "b", "c", "d", "e"]
    assert {s["status"] for s in steps.values()} == {"done"}
    assert {s["why"] for s in steps.values()} == {"not run before"}
    root = Path("out").resolve()
    manifest_id = runner.output_identity(root / "b", steps["b"]["upstream"])
    assert steps["b"]["identity"] == manifest_id and len(manifest_id) == 16
    assert steps["b"]["upstream"] == {"a": steps["a"]["identity"]}
    assert steps["d"]["upstream"] == {"b": manifest_id, "c": steps["c"]["identity"]}
    assert set(steps["a"]["upstream"]) == {"input:raw-a"}
    assert steps["a"]["config_hash"] == read_manifest(root / "a")["config_hash"]
    assert steps["a"]["counts"] == {"input": 7, "kept": 7, "dropped": 0, "quarantined": 0}
    assert all(isinstance(s["seconds"], float) for s in steps.values())

    again, ran = toy()
    assert ran == []
    assert {(s["status"], s["why"]) for s in again.values()} == {("skipped", "up to date")}
    assert {k: s["identity"] for k, s in again.items()} == {k: s["identity"] for k, s in steps.items()}


def test_changed_upstream_output_reruns_its_dependents_only(toy):
    first, _ = toy()
    root = Path("out").resolve()
    # step a's output is rebuilt outside the DAG (another value): b and d below it are now stale
    (root / "a").rename(root / "a-old")
    _stage([]).run(ToyConfig(input=(str(Path("raw-a").resolve()),), output=str(root / "a"), value=7))
    new_a = runner.output_identity(root / "a", first["a"]["upstream"])
    steps, ran = toy()
    assert ran == ["b", "d"]
    assert steps["a"]["status"] == "skipped" and steps["c"]["status"] == "skipped" and steps["e"]["status"] == "skipped"
    assert steps["b"]["why"] == f"upstream a changed (hash {first['a']['identity']} -> {new_a})"
    assert steps["d"]["why"].startswith(f"upstream b changed (hash {first['b']['identity']} -> ")
    assert (root / "d" / "data.txt").read_text() == "raw-a+7+0+0"
    stale = Path(steps["b"]["moved_aside"])  # the stale output is kept aside, never mixed in
    assert stale.parent == root and stale.name.startswith("b.stale-")
    assert (stale / "data.txt").read_text() == "raw-a+0+0"


def test_changed_config_is_rebuilt_with_both_hashes(toy):
    first, _ = toy()
    steps, ran = toy("c.value=5")
    assert ran == ["c", "d"]
    assert steps["c"]["why"] == f"config changed (hash {first['c']['config_hash']} -> {steps['c']['config_hash']})"
    assert steps["c"]["config_hash"] != first["c"]["config_hash"]
    assert steps["d"]["why"].startswith("upstream c changed")
    # a run-only key (the stage's hash ignores it) asks the stage, which keeps its output
    steps, ran = toy("c.value=5", "a.engine=ray")
    assert ran == []
    assert steps["a"]["why"] == "up to date (only keys that do not change the output changed)"


def test_changed_outside_input_and_deleted_output(toy):
    toy()
    Path("raw-e").write_text("raw-e, longer now")
    steps, ran = toy()
    assert ran == ["e"] and steps["e"]["why"].startswith("input raw-e changed (hash ")
    root = Path("out").resolve()
    import shutil

    shutil.rmtree(root / "c")
    steps, ran = toy()
    assert ran == ["c", "d"]
    assert steps["c"]["why"] == "no output (deleted?): built again"


def test_interrupted_step_resumes_and_failure_is_recorded(toy, monkeypatch):
    toy()
    root = Path("out").resolve()
    (root / "b" / "_SUCCESS").unlink()  # as if b had been interrupted after its first run
    steps, ran = toy()
    assert steps["b"]["why"] == "unfinished: resumed" and "moved_aside" not in steps["b"]

    def broken(cfg):
        raise OSError("disk gone")

    monkeypatch.setattr(registry, "stage_module", lambda name: SimpleNamespace(Config=ToyConfig, run=broken))
    Path("raw-c").write_text("changed")
    with pytest.raises(OSError):
        toy()
    steps = json.loads((root / "dag.json").read_text())["steps"]
    assert steps["c"]["status"] == "failed" and steps["c"]["error"] == "disk gone"
    assert steps["d"]["status"] == "not reached" and steps["d"]["upstream"]["c"]


def test_a_crash_while_checking_a_changed_config_does_not_make_the_old_output_current(toy, monkeypatch):
    toy()

    def broken(cfg):
        raise OSError("killed")

    monkeypatch.setattr(registry, "stage_module", lambda name: SimpleNamespace(Config=ToyConfig, run=broken))
    with pytest.raises(OSError):
        toy("e.value=3")
    runs: list[str] = []
    monkeypatch.setattr(registry, "stage_module", lambda name: _stage(runs))
    report = runner.run_dag("toy", "toy.yaml", "out", ["e.value=3"])
    assert runs == ["e"] and report["steps"]["e"]["why"].startswith("config changed (hash ")


def test_a_bad_step_config_is_refused_before_any_step_runs(toy):
    """Every step's config is built before step 1: a bad key of the last step runs nothing and leaves
    the lineage as it was (no step marked failed or not reached)."""
    from foundation.errors import ConfigError

    with pytest.raises(ConfigError, match=r"step e: .*unknown key 'no_such_key'"):
        toy("e.no_such_key=1")
    assert not Path("out").exists()
    first, _ = toy()
    before = Path("out/dag.json").read_bytes()
    with pytest.raises(ConfigError, match=r"step c: .*'value': expected an integer"):
        toy("c.value=x", "a.value=1")  # a's change would rebuild a: it must not even start
    assert Path("out/dag.json").read_bytes() == before
    again, ran = toy()
    assert ran == [] and {s["why"] for s in again.values()} == {"up to date"}
    assert {k: s["identity"] for k, s in again.items()} == {k: s["identity"] for k, s in first.items()}


def test_a_copied_or_moved_dag_output_is_up_to_date_where_it_lands(toy):
    """Identity does not depend on where an output lives: the tree copied without its mtimes (as a
    bucket round trip does) and the original deleted, the rerun at the copy is a no-op, also when
    the stages are asked (a run-only key changed: each stage compares its own pinned config)."""
    import shutil

    first, _ = toy()
    shutil.copytree("out", "elsewhere/out2", copy_function=shutil.copy)
    shutil.rmtree("out")
    again, ran = toy(output="elsewhere/out2")
    assert ran == [] and {s["status"] for s in again.values()} == {"skipped"}
    assert {s["why"] for s in again.values()} == {"up to date"}
    assert {k: s["identity"] for k, s in again.items()} == {k: s["identity"] for k, s in first.items()}
    asked, ran = toy("b.engine=ray", "d.engine=ray", output="elsewhere/out2")
    assert ran == [] and asked["d"]["why"] == "up to date (only keys that do not change the output changed)"
    assert not [p for p in os.listdir("elsewhere") if ".stale-" in p]
    rebuilt, ran = toy("a.value=5", output="elsewhere/out2")  # a real change still reaches every step below
    assert ran == ["a", "b", "d"]


def test_a_dag_step_racing_a_stage_command_refuses_naming_it(toy):
    """A run writing one step's output (here: a process holding its lock) stops the DAG at that step
    with a one-line refusal naming the holder; once it is gone the DAG goes on from there."""
    import subprocess
    import sys
    from foundation.ledger import OutputLocked

    first, _ = toy()
    hold = ("import sys, time\nfrom foundation.ledger import output_lock\n"
            "with output_lock(sys.argv[1], 'mgte train x'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, "out/c"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLocked, match=rf"out/c is being written by another run \(host \S+ pid {holder.pid}"):
            toy("a.value=1")
        steps = json.loads(Path("out/dag.json").read_text())["steps"]
        assert steps["a"]["status"] == "done" and steps["c"]["status"] == "failed"
        assert "mgte train x" in steps["c"]["error"] and steps["d"]["status"] == "not reached"
    finally:
        holder.kill()
        holder.wait()
    again, ran = toy("a.value=1")
    assert ran == ["d"]  # a and b were rebuilt before the refusal; c (unchanged) stands; d reads the new b
    assert again["c"]["status"] == "skipped" and again["d"]["status"] == "done"


def test_a_missing_outside_model_is_refused_before_any_step_runs(toy):
    """A model no step builds (here: e's `model`) is checked before step 1; the DAG's own (d's model,
    c/model) are left to their stage, since they do not exist yet."""
    from foundation.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"^step e: model=/nonexistent/model: no such model directory"):
        toy("e.model=/nonexistent/model")
    assert not Path("out").exists()
