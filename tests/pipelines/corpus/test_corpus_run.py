"""`mgte corpus` on the bundled corpus against its truth file (data/corpus/truth.jsonl)."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.corpus import run
from foundation.ledger import read_manifest
from foundation.errors import StageConflict
from storage_schemas import CLEAN_DOC, DROPPED, LANG_STATS, QUARANTINE

from .conftest import corpus_config, outcome


def truth_key(t):
    return (t["file"], t["line"] if t["line"] is not None else t["row"])


def test_invariant_and_manifest(local_run):
    out, manifest = local_run
    c = manifest["counts"]
    assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"]
    assert sum(manifest["dropped_by_reason"].values()) == c["dropped"]
    assert manifest["config_hash"] and manifest["config"]["lid"]["backend"] == "fasttext"
    assert (out / "_SUCCESS").is_file()
    # tables match their schemas, and the counts match the rows
    assert pq.read_table(out / "data").num_rows == c["kept"]
    assert pq.read_table(out / "dropped").num_rows == c["dropped"]
    assert pq.read_table(out / "quarantine").num_rows == c["quarantined"]
    for sub, table in (("data", CLEAN_DOC), ("dropped", DROPPED), ("quarantine", QUARANTINE)):
        for f in manifest["outputs"][sub]:
            table.validate(pq.read_table(out / f))
    assert not list(out.rglob("*.tmp"))


def test_every_record_is_accounted_and_malformed_ones_quarantined(local_run, truth):
    out, manifest = local_run
    got = outcome(out)
    records = [t for t in truth if t["scope"] == "record"]
    assert manifest["counts"]["input"] == len(records) + sum(t["scope"] != "record" for t in truth)
    for t in records:
        fate = got.get(truth_key(t))
        assert fate is not None, f"record {truth_key(t)} is in no output"
        if t["expected_outcome"] == "quarantined":
            assert fate[0] == "quarantined", (t, fate)
        if t["kind"] == "malformed":
            assert fate[0] in ("quarantined", "dropped"), (t, fate)
    file_level = [t for t in truth if t["scope"] != "record"]
    for t in file_level:
        assert got.get((t["file"], -1), ("?",))[0] == "quarantined", t


def test_language_identification_accuracy(local_run, truth):
    out, _ = local_run
    texts = {(Path(r["path"]).name, r["line"]): r["text"]
             for sub in ("data", "dropped") for r in pq.read_table(out / sub, columns=["path", "line", "text"]).to_pylist()}
    got = outcome(out)
    scored = correct = 0
    for t in truth:
        if t["scope"] != "record" or not t["expected_lang"] or t["kind"] in ("malformed",):
            continue
        key = truth_key(t)
        fate = got[key]
        if fate[1] is None or len(texts.get(key) or "") < 200:
            continue
        scored += 1
        correct += fate[1] == t["expected_lang"]
    assert scored > 1000
    assert correct / scored >= 0.95, f"LID accuracy {correct}/{scored}"


def test_duplicates_removed_and_originals_kept(local_run, truth):
    out, _ = local_run
    got = outcome(out)
    exact = [t for t in truth if t["kind"] == "exact_duplicate"]
    near = [t for t in truth if t["kind"] == "near_duplicate"]
    originals = [t for t in truth if t["kind"] == "original"]
    assert all(got[truth_key(t)][0] != "kept" for t in exact), "an exact duplicate survived"
    near_removed = sum(got[truth_key(t)][0] != "kept" for t in near)
    assert near_removed / len(near) >= 0.9
    as_dup = sum(got[truth_key(t)][2] in ("exact_duplicate", "near_duplicate") for t in originals)
    assert as_dup / len(originals) < 0.05, f"{as_dup} distinct documents dropped as duplicates"
    # the survivor of a pair is the earliest record, and duplicate_of names it
    ids = {r["id"] for r in pq.read_table(out / "data", columns=["id"]).to_pylist()}
    dups = pq.read_table(out / "dropped", columns=["reason", "duplicate_of"]).to_pylist()
    assert all(d["duplicate_of"] for d in dups if d["reason"].endswith("_duplicate"))
    assert any(d["duplicate_of"] in ids for d in dups if d["reason"] == "exact_duplicate")


def test_language_stats_and_sampling_table(local_run):
    out, manifest = local_run
    stats = LANG_STATS.validate(pq.read_table(out / "stats" / "lang_stats.parquet")).to_pylist()
    docs = pq.read_table(out / "data", columns=["lang"]).to_pylist()
    assert sum(s["docs"] for s in stats) == len(docs) == manifest["counts"]["kept"]
    assert len(stats) >= 60
    z = sum(s["p"] ** 0.5 for s in stats)
    for s in stats:
        assert s["p"] == pytest.approx(s["docs"] / len(docs))
        assert s["q"] == pytest.approx(s["p"] ** 0.5 / z)
    assert sum(s["q"] for s in stats) == pytest.approx(1.0)


def test_rerun_is_a_noop_and_changed_config_refuses(local_run):
    out, manifest = local_run
    before = sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
    again = run(corpus_config(out, "engine=local"))
    assert again["finished"] == manifest["finished"]
    assert sorted((p, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()) == before
    with pytest.raises(StageConflict, match=manifest["config_hash"]):
        run(corpus_config(out, "engine=local", "lid.min_score=0.9"))
    assert read_manifest(out)["config_hash"] == manifest["config_hash"]


def test_audit_report(local_run, tmp_path):
    from pipelines.audit import write_audit

    out, manifest = local_run
    page = write_audit(out, tmp_path)
    html = page.read_text()
    for png in ("docs_per_language.png", "length_histograms.png", "drop_reasons.png", "sampling.png"):
        assert (tmp_path / png).stat().st_size > 5000
        assert png in html
    for reason in manifest["dropped_by_reason"]:
        assert reason in html
    assert json.dumps(manifest["counts"]["input"]) in html


def test_every_language_keeps_its_clean_text_and_junk_goes(local_run, truth):
    """Issue 26's target under the tiny config (web profile with per-language thresholds, the pydoc
    source curated, py3langid as language ID's second opinion): every language keeps at least 60 % of
    its clean originals (English too: its Python reference sections are documentation; Haitian, Somali,
    Yoruba, Quechua, Javanese too: FT176 alone misreads them), and every junk record goes."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    from corpus_thresholds import fates, score

    result = score(truth, fates(local_run[0]))
    low = {lang: (v["retention"], v["drops"]) for lang, v in result["per_lang"].items() if v["retention"] < 0.6}
    assert low == {} and result["per_lang"]["en"]["retention"] >= 0.85, (low, result["per_lang"]["en"])
    assert result["junk_removal"] >= 0.95 and len(result["per_lang"]) >= 70, result["junk_kept"]


def test_language_stats_summed_file_by_file_equal_the_stats_of_all_documents(tmp_path):
    """The stage's table, summed one written file at a time, against :func:`language_stats` over
    every document at once (the driver held them all until session 9)."""
    import random

    import pyarrow as pa

    from pipelines.corpus.stats import files_language_stats, language_stats

    rng = random.Random(3)
    tables = [pa.table({"lang": [rng.choice(["en", "de", "zh", "sw"]) for _ in range(n)],
                        "n_chars": [rng.randrange(10, 900) for _ in range(n)],
                        "n_bytes": [rng.randrange(10, 2000) for _ in range(n)],
                        "n_tokens": [rng.randrange(2, 300) for _ in range(n)]}) for n in (50, 1, 300, 7)]
    files = []
    for i, t in enumerate(tables):
        files.append(tmp_path / f"{i}.parquet")
        pq.write_table(t, files[-1])
    for with_tokens in (True, False):
        want = language_stats(pa.concat_tables(tables), 0.5, with_tokens)
        got = files_language_stats(files, 0.5, with_tokens)
        assert [{k: r[k] for k in ("lang", "docs", "chars", "bytes", "tokens")} for r in got] == \
            [{k: r[k] for k in ("lang", "docs", "chars", "bytes", "tokens")} for r in want]
        assert [x for r in got for x in (r["p"], r["q"])] == pytest.approx([x for r in want for x in (r["p"], r["q"])])
