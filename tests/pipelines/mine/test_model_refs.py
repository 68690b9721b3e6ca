"""`mgte mine` checks its `model` before any phase (pipelines/contract.run_stage -> check_models): a
missing directory exits 2 in one line naming the key and the path, and nothing is written."""

from pathlib import Path

from dags.cli import main
from tests.pipelines.mine.conftest import topic_pairs, write_jsonl

REPO = Path(__file__).resolve().parents[3]


def test_missing_model_exits_2_before_any_phase(tmp_path, capsys, caplog):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs(2))
    out = tmp_path / "out"
    code = main(["mine", "--config", str(REPO / "dags/configs/mine/tiny.yaml"), "--input", str(pairs),
                 "--output", str(out), "--set", "model=/nonexistent", "--set", f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines() == ["mgte: error: model=/nonexistent: no such model directory"]
    assert not out.exists() and not (tmp_path / "cache").exists()  # no phase ran: nothing read, grouped, encoded
    assert not [r for r in caplog.records if r.name == "mgte.stage"]
