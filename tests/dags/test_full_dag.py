"""``mgte dag run full`` on the tiny configs, end to end through the CLI, shrunk to CI size
(a few train steps): every step is built, dag.json carries each step's lineage, the comparison
report exists, ``mgte audit`` reads every step's output; a second run skips every step as up to date, and so does a run of a copy of the
output at another place."""

import json
import os
import shutil
from pathlib import Path

import pytest

from dags.cli import main
from dags.full import DAG

REPO = Path(__file__).resolve().parents[2]
SHRINK = ["mlm-2048.loop.max_steps=3", "mlm-2048.loop.log_every=1", "mlm-2048.loop.ckpt_every=2",
          "mlm-8192.loop.max_steps=2", "mlm-8192.loop.log_every=1",
          "cpt.loop.max_steps=3", "cpt.loop.log_every=1", "cpt.loop.ckpt_every=2",
          "trm.loop.max_steps=3", "trm.loop.log_every=1", "trm.loop.ckpt_every=2",
          "reranker.loop.max_steps=3", "reranker.loop.log_every=1", "reranker.loop.ckpt_every=2",
          # engines: every step in this process. Each stage's engines are held to its local one in its own
          # tests (Ray Train: tests/training/{cpt,reranker}/ Ray tests, mlm's 2 workers with a restart, the
          # 2-node cluster); this test is about the wiring, lineage and reruns (a Ray Train start is 20-30 s)
          "corpus.engine=local", "mlm-2048.engine=local", "mlm-2048.scaling.num_workers=1",
          "mlm-8192.engine=local", "mlm-8192.scaling.num_workers=1", "cpt.engine=local", "trm.engine=local",
          "reranker.engine=local"]


@pytest.mark.slow
def test_full_dag_tiny_end_to_end_then_up_to_date(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the DAG config's `input` paths are relative to the repository
    out = tmp_path / "full"
    argv = ["dag", "run", "full", "--config", "dags/configs/full/tiny.yaml", "--output", str(out)]
    for item in SHRINK:
        argv += ["--set", item]
    assert main(argv) == 0, capsys.readouterr().err
    first = json.loads((out / "dag.json").read_text())
    steps = first["steps"]
    assert sorted(steps) == sorted(s.name for s in DAG.steps)  # dag.json is written with sorted keys
    for step in DAG.steps:
        rec = steps[step.name]
        assert (rec["status"], rec["why"]) == ("done", "not run before"), step.name
        manifest = json.loads((out / step.name / "manifest.json").read_text())
        assert rec["config_hash"] == manifest["config_hash"] and rec["counts"] == manifest["counts"]
        assert len(rec["identity"]) == 16 and rec["seconds"] >= 0
        upstream = {ref.split("/")[0] for ref in step.refs()}
        assert {u: steps[u]["identity"] for u in upstream}.items() <= rec["upstream"].items(), step.name
    assert steps["cpt"]["upstream"] == {"pairs": steps["pairs"]["identity"], "mlm-8192": steps["mlm-8192"]["identity"]}
    # the eval set the data stages decontaminate against is outside data of their lineage
    assert set(steps["corpus"]["upstream"]) == {"input:data/corpus/raw", "decontaminate:data/eval/tiny-beir"}
    assert steps["mine"]["upstream"] == {"pairs": steps["pairs"]["identity"], "cpt": steps["cpt"]["identity"],
                                         "decontaminate:data/eval/tiny-beir":
                                             steps["corpus"]["upstream"]["decontaminate:data/eval/tiny-beir"]}
    # tiny-beir is built from the bundled UDHR and Python docs: those texts leave the training data
    # (docs/corpus.md, "Decontamination"; 416 exact + 48 near documents, 190 translation pairs)
    for step, n in (("corpus", 464), ("pairs", 190)):
        assert json.loads((out / step / "manifest.json").read_text())["dropped_by_reason"]["eval_overlap"] == n
    assert set(steps["eval-trm"]["upstream"]) >= {"trm", "reranker"}
    methods = json.loads((out / "eval-trm" / "metrics.json").read_text())["methods"]
    assert {"bm25", "dense", "sparse", "hybrid", "rerank"} <= set(methods), sorted(methods)
    assert Path(first["comparison"]).is_file() and Path(first["comparison"]).stat().st_size > 0
    assert json.loads((out / "mlm-2048" / "manifest.json").read_text())["extra"]["steps"] == 3
    for step in DAG.steps:  # every real stage output has an audit page
        assert main(["audit", str(out / step.name), "--output", str(tmp_path / "audit" / step.name)]) == 0, \
            capsys.readouterr().err
        assert "input = kept + dropped + quarantined: holds" in (tmp_path / "audit" / step.name / "index.html").read_text()
    assert (tmp_path / "audit" / "mlm-2048" / "loss.png").is_file()

    assert main(argv) == 0, capsys.readouterr().err
    second = json.loads((out / "dag.json").read_text())
    assert {n: (r["status"], r["why"]) for n, r in second["steps"].items()} == \
        {s.name: ("skipped", "up to date") for s in DAG.steps}
    assert {n: r["identity"] for n, r in second["steps"].items()} == {n: r["identity"] for n, r in steps.items()}
    assert not [p for p in os.listdir(out) if ".stale-" in p]

    # portable: the whole output copied without mtimes (a bucket round trip) to another place, the
    # original gone; the rerun there is a no-op, also for the stages asked because a run-only key
    # changed (each compares its pinned config and inputs: a model stage and a data stage)
    moved = tmp_path / "elsewhere" / "full-copy"
    shutil.copytree(out, moved, copy_function=shutil.copy)
    shutil.rmtree(out)
    moved_argv = [moved if a == str(out) else a for a in argv] + ["--set", "trm.engine=ray", "--set", "mine.engine=ray"]
    assert main([str(a) for a in moved_argv]) == 0, capsys.readouterr().err
    third = json.loads((moved / "dag.json").read_text())["steps"]
    asked = "up to date (only keys that do not change the output changed)"
    assert {n: (r["status"], r["why"]) for n, r in third.items()} == \
        {s.name: ("skipped", asked if s.name in ("trm", "mine") else "up to date") for s in DAG.steps}
    assert {n: r["identity"] for n, r in third.items()} == {n: r["identity"] for n, r in steps.items()}
    assert not [p for p in os.listdir(moved) if ".stale-" in p or p.startswith("discarded-")]
