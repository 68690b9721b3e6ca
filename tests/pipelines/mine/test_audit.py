"""`mgte audit` on a `mgte mine` output: score distributions, rank histogram, per-source gaps, the
rule counts behind too_few_negatives, the cache use."""

import re

from dags.cli import main
from pipelines import mine
from tests.pipelines.mine.conftest import config, read_rows, topic_pairs, write_jsonl


def test_audit_page_of_a_mine_output(tmp_path, fake, capsys):
    src = write_jsonl(tmp_path / "pairs.jsonl", topic_pairs())
    manifest = mine.run(config(tmp_path, [src], rank_range=[55, 70], num_negatives=9))
    assert main(["audit", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "audit" / "index.html").read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    text = re.sub(r"\s+", " ", text)
    rows = read_rows(tmp_path / "out")
    assert f"{len(rows)} (query, positive) rows" in text
    assert f"too_few_negatives ({manifest['dropped_by_reason']['too_few_negatives']})" in text
    assert "candidates left after each rule" in text and "passing" in text
    assert "shards encoded" in text and "topics" in text
    for png in ("scores.png", "ranks.png"):
        assert (tmp_path / "out" / "audit" / png).stat().st_size > 5000
