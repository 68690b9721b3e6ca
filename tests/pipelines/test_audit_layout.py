"""Every kind of audit page fits the page: without a browser (images styled max-width:100%, their
files decode, tables in scroll containers, no wide inline width) and, where Chromium is installed,
in headless Chromium (no element past the viewport, every image loaded)."""

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.audit import write_audit
from pipelines.audit.screens import WIDTHS, browser_problems, browser_problems_many, find_browser, static_problems

BROWSER = find_browser()
from tests.pipelines.test_audit import QUARANTINE, _stage

LONG = "x" * 3000  # one unbroken word: wraps or scrolls, never widens the page
KINDS = ("mlm-shards", "pairs", "train", "eval", "mine", "future", "eval-diff")


def _page(tmp: Path, kind: str) -> Path:
    """A small finished output of ``kind`` (with long unbroken strings and many languages) and its audit page;
    ``eval-diff``: the `mgte audit diff` page of two eval outputs."""
    if kind == "eval-diff":
        from pipelines.audit.diff import write_diff

        _page(tmp / "old", "eval"), _page(tmp / "new", "eval")
        return write_diff(tmp / "old" / "eval", tmp / "new" / "eval")
    langs = [f"l{i:02d}" for i in range(90)]
    root = tmp / kind
    counts = {"input": 5, "kept": 3, "dropped": 1, "quarantined": 1}
    dropped = pa.table({"id": ["d1"], "reason": ["too_short"], "text": [LONG]})
    common = {"dropped/d.parquet": dropped, "quarantine/q.parquet": QUARANTINE}
    if kind == "mlm-shards":
        data = pa.table({"lang": langs, "n_tokens": list(range(10, 100)), "input_ids": [[1, 2]] * 90})
        _stage(root, kind, {"data/p.parquet": data, **common}, counts, {"too_short": 1},
               extra={"chunks": 90, "tokens": 4905, "max_len": 2048})
    elif kind == "pairs":
        data = pa.table({"source": ["qa"] * 90, "lang": langs, "query": [LONG] * 90, "positive": ["p"] * 90,
                         "pair_id": [str(i) for i in range(90)]})
        stats = pa.table({"source": ["qa"], "pairs": [90], "query_truncated": [0], "positive_truncated": [0],
                          "p": [1.0], "q": [1.0]})
        _stage(root, kind, {"data/p.parquet": data, "stats/source_stats.parquet": stats, **common}, counts,
               {"too_short": 1})
    elif kind == "train":
        _stage(root, "train-mlm", common, counts, {"too_short": 1}, extra={"steps": 3})
        (root / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 9.0 - s, "lr": 1e-3,
                                                                "tokens_per_s": 100.0, "nonfinite_skipped": 0}) + "\n"
                                                    for s in (1, 2, 3)))
    elif kind == "eval":
        _stage(root, kind, common, counts, {"too_short": 1}, extra={"final_method": "dense"})
        per_lang = {lang: {"ndcg@10": 0.5} for lang in langs}
        res = {"ndcg@10": 0.5, "recall@10": 0.5, "recall@20": 0.6, "recall@100": 0.9, "mrr@10": 0.4, "map": 0.3,
               "n_queries": 2, "per_language": per_lang}
        (root / "metrics.json").write_text(json.dumps({"model": LONG, "final_method": "dense", "ndcg@10": 0.5,
                                                       "n_queries": 2, "methods": {"bm25": res, "dense": res}}))
    elif kind == "mine":
        data = pa.table({"query_id": ["q1", "q2"], "query": [LONG, "q"], "positive": ["p", "p"],
                         "positive_score": [0.9, 0.8], "negatives": [["n1", LONG], ["n3", "n4"]],
                         "negative_ranks": [[3, 5], [4, 6]], "negative_scores": [[0.5, 0.4], [0.6, 0.3]],
                         "source": ["a", "b"]})
        mine_dropped = pa.table({"query_id": ["q9"], "reason": ["too_few_negatives"], "source": ["a"],
                                 "scores": [json.dumps({"ranked": 9, "passing": 1})]})
        _stage(root, kind, {"data/p.parquet": data, "dropped/d.parquet": mine_dropped,
                            "quarantine/q.parquet": QUARANTINE}, counts, {"too_few_negatives": 1},
               extra={"miner": "dense"})
    else:
        _stage(root, "future-stage", common, counts, {"too_short": 1})
    return write_audit(root)


@pytest.mark.parametrize("kind", KINDS)
def test_page_fits_without_a_browser(tmp_path, kind):
    page = _page(tmp_path, kind)
    assert static_problems(page) == []
    assert "<img" in page.read_text() or kind in ("future", "eval-diff")


def test_the_screens_script_finds_every_page(tmp_path):
    from pipelines.audit.screens import _name, audit_pages, main

    pages = [_page(tmp_path, "future"), _page(tmp_path, "eval-diff")]
    found = audit_pages([tmp_path])
    evals = [tmp_path / f"{side}/eval/audit/index.html" for side in ("old", "new")]
    assert sorted(found) == sorted(pages + evals)
    assert {_name(p) for p in found} == {"future", "eval", "eval-diff"} and audit_pages([pages[0]]) == [pages[0]]
    if BROWSER is None:
        assert main([str(tmp_path / "shots"), str(tmp_path)]) == 1  # one line: no Chromium


def test_the_static_check_finds_what_does_not_fit(tmp_path):
    page = _page(tmp_path, "mlm-shards")
    html = page.read_text()
    bad = page.with_name("bad.html")
    bad.write_text(html.replace("max-width:100%", "").replace("<div class='scroll'>", "<div>")
                   .replace("<h2>Shards</h2>", "<h2>Shards</h2><div style='width:1500px'></div>")
                   .replace("chunk_lengths.png", "missing.png"))
    (tmp_path / "mlm-shards" / "audit" / "broken.png").write_bytes(b"\x89PNG not really")
    bad.write_text(bad.read_text().replace("tokens_per_language.png", "broken.png"))
    problems = "\n".join(static_problems(bad))
    assert problems.count("has no max-width:100%") == 3
    assert "no such file" in problems and "missing.png" in problems
    assert "broken.png'>: does not decode" in problems
    assert "a <table> outside a scroll container" in problems
    assert "inline width over 1000 px" in problems


NO_BROWSER = ("no Chromium to open the pages in (MGTE_CHROMIUM, chromium, chromium-browser or google-chrome on PATH; "
              "Debian: apt-get install chromium)")


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_every_audit_page_fits_in_headless_chromium(tmp_path):
    from tests.pipelines.corpus.planted import build

    pages = [_page(tmp_path, kind) for kind in KINDS]
    corpus_out = build(tmp_path / "planted")[0]
    pages.append(write_audit(corpus_out))
    checked = browser_problems_many(pages, BROWSER, WIDTHS)  # one Chromium start for all
    for page in pages:
        n_images = page.read_text().count("<img ")
        for width in WIDTHS:
            summary, problems = checked[(page.resolve(), width)]
            assert problems == [] and summary["images"] == n_images and summary["width"] <= width, (page, summary)


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_the_browser_check_finds_what_does_not_fit(tmp_path):
    page = _page(tmp_path, "future")
    bad = page.with_name("bad.html")
    bad.write_text(page.read_text().replace("</body>", "<div id='wide' style='width:1500px'>x</div>"
                                                      "<img src='missing.png' style='max-width:100%'></body>"))
    checked = browser_problems_many([page, bad], BROWSER, WIDTHS)
    assert all(checked[(page.resolve(), w)][1] == [] for w in WIDTHS)
    for width in WIDTHS:
        summary, problems = checked[(bad.resolve(), width)]
        assert summary["width"] == width, summary  # each frame is as wide as its width
        text = "\n".join(problems)
        assert re.search(rf"<div#wide> reaches 15\d\d px, viewport {width}", text) and "page scrolls sideways" in text, text
        assert "image did not load: missing.png" in text, text


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_the_screens_script_checks_and_shoots_each_width(tmp_path):
    from PIL import Image

    from pipelines.audit.screens import main

    _page(tmp_path, "train")
    assert main([str(tmp_path / "shots"), str(tmp_path / "train")]) == 0
    for width in WIDTHS:
        with Image.open(tmp_path / "shots" / f"train-{width}.png") as im:
            assert im.size == (width, 1600) and im.mode == "P", (width, im.size, im.mode)
