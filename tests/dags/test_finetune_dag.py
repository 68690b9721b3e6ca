"""``mgte dag run finetune`` on the bundled fine-tuning sets from all-MiniLM-L6-v2, end to end through
the CLI, shrunk to CI size (a few train steps, every step in this process): the mine step reads the
sets' train splits with the start model as miner, the TRM and the reranker start from it, the evals
of the start model and of the fine-tuned TRM + reranker read the held-out splits, one comparison page;
a rerun skips every step, and ``--set init=`` reaches every step that uses the start model."""

import json
from pathlib import Path

import pytest

from dags.cli import main
from dags.finetune import DAG

REPO = Path(__file__).resolve().parents[2]
SHRINK = ["trm.loop.max_steps=2", "trm.loop.log_every=1", "trm.loop.ckpt_every=2", "trm.engine=local",
          "reranker.loop.max_steps=2", "reranker.loop.log_every=1", "reranker.loop.ckpt_every=2",
          "reranker.engine=local", "mine.engine=local",
          # one held-out set is evaluated here (the docstring evals are the same wiring on another directory)
          "eval-start-docstrings.enabled=false", "eval-finetuned-docstrings.enabled=false"]
EVALS = ("eval-start-qa", "eval-finetuned-qa")
OFF = {"eval-start-docstrings", "eval-finetuned-docstrings"}


@pytest.mark.slow
def test_finetune_dag_tiny_end_to_end_then_up_to_date(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the DAG config's `input` paths are relative to the repository
    out = tmp_path / "ft"
    argv = ["dag", "run", "finetune", "--config", "dags/configs/finetune/tiny.yaml", "--output", str(out)]
    for item in SHRINK:
        argv += ["--set", item]
    assert main(argv) == 0, capsys.readouterr().err
    first = json.loads((out / "dag.json").read_text())
    steps = first["steps"]
    assert first["vars"] == {"init": "all-MiniLM-L6-v2"}
    assert {n: (r["status"], r["why"]) for n, r in steps.items()} == {
        s.name: ("disabled", "enabled: false") if s.name in OFF else ("done", "not run before") for s in DAG.steps}
    mine = json.loads((out / "mine" / "manifest.json").read_text())
    assert [Path(e["path"]).relative_to(REPO / "data" / "finetune").as_posix() for e in mine["inputs"]] == \
        ["chatterbot-qa/qrels/train.tsv", "stdlib-docstrings/qrels/train.tsv"]
    assert mine["config"]["model"] == "all-MiniLM-L6-v2" and mine["counts"]["kept"] > 300
    # decontaminated against the held-out splits the eval steps read: 10 training pairs whose query or
    # answer is a held-out question or answer (docs/corpus.md, "Decontamination")
    assert mine["dropped_by_reason"]["eval_overlap"] == 10 and mine["extra"]["decontaminate"]["dropped"] == 10
    for stage in ("trm", "reranker"):
        assert json.loads((out / stage / "manifest.json").read_text())["config"]["init"] == "all-MiniLM-L6-v2"
    for name in EVALS:
        metrics = json.loads((out / name / "metrics.json").read_text())
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["config"]["split"] == "test"
        expected = {"bm25", "dense"} | ({"sparse", "hybrid", "rerank"} if "finetuned" in name else set())
        assert expected <= set(metrics["methods"]), (name, sorted(metrics["methods"]))
    assert steps["eval-finetuned-qa"]["upstream"] == {"trm": steps["trm"]["identity"],
                                                      "reranker": steps["reranker"]["identity"],
                                                      "input:data/finetune/chatterbot-qa":
                                                          steps["eval-finetuned-qa"]["upstream"][
                                                              "input:data/finetune/chatterbot-qa"]}
    page = Path(first["comparison"])
    assert page.is_file() and all(name in page.read_text() for name in EVALS)

    assert main(argv) == 0, capsys.readouterr().err
    second = json.loads((out / "dag.json").read_text())["steps"]
    assert {n: r["status"] for n, r in second.items()} == {s.name: "disabled" if s.name in OFF else "skipped"
                                                           for s in DAG.steps}

    # `--set init=` reaches every step that uses the start model: a missing one is refused before step 1
    missing = str(REPO / "tests" / "no-such-model")
    assert main(argv + ["--set", f"init={missing}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "step mine" in err and "no-such-model" in err, err
    assert json.loads((out / "dag.json").read_text())["steps"] == second  # nothing ran
