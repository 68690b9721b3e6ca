"""Incremental builds (`previous: [DIR]`): a build against earlier outputs decides as one build over
everything would, on every engine; unusable previous outputs are refused in one line."""

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from foundation.errors import ConfigError
from pipelines.corpus import run

from .conftest import cli, outcome
from .test_profiles import DOCS, docs_config

FIRST = [DOCS / "01-coreutils-a.jsonl"]
SECOND = [DOCS / "02-coreutils-b.jsonl.gz", DOCS / "03-junk-malformed.jsonl"]
CURATED = "quality.profile=curated"


def build(out, files, *sets):
    inputs = "input=[" + ", ".join(f"'{p}'" for p in files) + "]"
    return run(docs_config(out, CURATED, inputs, *sets))


def previous(*dirs) -> str:
    return "previous=[" + ", ".join(f"'{d}'" for d in dirs) + "]"


def kept(out) -> dict[tuple, str]:
    """(file name, line, id) -> text hash of every kept document."""
    return {(Path(r["path"]).name, r["line"], r["id"]): r["text_hash"]
            for r in pq.read_table(Path(out) / "data", columns=["path", "line", "id", "text_hash"]).to_pylist()}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("incremental")
    whole = build(base / "whole", [*FIRST, *SECOND])
    a = build(base / "A", FIRST)
    b = build(base / "B", SECOND, previous(base / "A"))
    return base, {"whole": whole, "A": a, "B": b}


def test_second_half_against_the_first_equals_one_build_of_the_whole(builds):
    base, manifests = builds
    whole, a, b = kept(base / "whole"), kept(base / "A"), kept(base / "B")
    assert not set(a) & set(b)
    assert {**a, **b} == whole  # exactly the same kept documents
    assert len(set(a.values()) | set(b.values())) == len(a) + len(b)  # no text kept twice across builds
    for m in manifests.values():
        c = m["counts"]
        assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"]  # per build
    assert manifests["B"]["counts"]["input"] + manifests["A"]["counts"]["input"] == manifests["whole"]["counts"]["input"]
    # B's copies of A's documents name A's survivors
    a_ids = {k[2] for k in a}
    dups = [r for r in pq.read_table(base / "B" / "dropped").to_pylist() if r["reason"].endswith("_duplicate")]
    assert sum(r["duplicate_of"] in a_ids for r in dups) >= 5


def test_cumulative_stats_are_the_whole_builds(builds):
    base, manifests = builds
    read = lambda p: pq.read_table(p).to_pylist()  # noqa: E731
    whole = read(base / "whole" / "stats" / "lang_stats.parquet")
    cumulative = read(base / "B" / "stats" / "lang_stats_cumulative.parquet")
    assert [{k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in r.items()} for r in whole] == cumulative
    assert manifests["B"]["extra"]["cumulative"] == {"builds": 2, "kept": manifests["whole"]["counts"]["kept"],
                                                     "languages": len(whole)}
    own = read(base / "B" / "stats" / "lang_stats.parquet")
    assert sum(r["docs"] for r in own) == manifests["B"]["counts"]["kept"]


@pytest.mark.parametrize("engine,sets", [
    ("beam", ["beam.options=--runner=DirectRunner --direct_num_workers=1 --direct_running_mode=in_memory"]),
    pytest.param("ray", ["ray.num_cpus=2"], marks=pytest.mark.slow),  # Ray Data's shuffles: 25-100 s
])
def test_engines_agree_on_an_incremental_build(engine, sets, builds, tmp_path, local_ray):
    base, manifests = builds
    manifest = build(tmp_path, SECOND, previous(base / "A"), f"engine={engine}", *sets)
    assert outcome(tmp_path) == outcome(base / "B")
    assert manifest["counts"] == manifests["B"]["counts"]


def test_previous_builds_are_followed_transitively(builds, tmp_path):
    base, _ = builds
    # C names only B, and reads A's file again: every record repeats one A decided on
    manifest = build(tmp_path, FIRST, previous(base / "B"))
    assert [Path(p["path"]).name for p in manifest["extra"]["previous"]] == ["A", "B"]
    assert manifest["counts"]["kept"] == 0
    a_ids = {k[2] for k in kept(base / "A")}
    dups = [r for r in pq.read_table(tmp_path / "dropped").to_pylist() if r["reason"] == "exact_duplicate"]
    assert {r["id"] for r in dups} >= a_ids and all(r["duplicate_of"] == r["id"] for r in dups if r["id"] in a_ids)


def test_unfinished_or_other_dedup_previous_is_refused(builds, tmp_path):
    base, _ = builds
    unfinished = tmp_path / "unfinished"
    shutil.copytree(base / "A", unfinished)
    (unfinished / "_SUCCESS").unlink()
    with pytest.raises(ConfigError, match="not a finished corpus output"):
        build(tmp_path / "x", SECOND, previous(unfinished))
    other = tmp_path / "other"
    build(other, FIRST, "dedup.threshold=0.7")
    with pytest.raises(ConfigError, match=r"other dedup settings \(dedup.threshold: 0.7 there, 0.6 here\)"):
        build(tmp_path / "y", FIRST, previous(other))
    proc = cli("corpus", "--config", str(Path(__file__).parents[3] / "dags/configs/corpus/tiny.yaml"),
               "--input", str(FIRST[0]), "--output", str(tmp_path / "z"), "--set", "engine=local",
               "--set", previous(unfinished), check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(unfinished) in proc.stderr


def test_audit_shows_previous_builds_and_failed_statistics(builds, tmp_path):
    from pipelines.audit import write_audit

    base, _ = builds
    html = write_audit(base / "B", tmp_path).read_text()
    assert "Incremental build: 1 previous build(s)" in html and str(base / "A") in html
    assert "boilerplate_word_ratio = 1.0 (max 0.5, curated)" in html


@pytest.mark.slow
def test_bundled_corpus_in_two_builds_keeps_what_one_build_keeps(local_run, tmp_path):
    """The issue's check on the bundled corpus (web profile, 12 files, all engines' reference):
    files 01-06, then 07-12 against them, vs one build of all 12 (conftest's local_run)."""
    from .conftest import RAW, corpus_config

    whole_dir, _ = local_run
    files = sorted(RAW.iterdir())
    first, second = files[:6], files[6:]
    run(corpus_config(tmp_path / "A", "engine=local", inputs=[str(p) for p in first]))
    run(corpus_config(tmp_path / "B", "engine=local", previous(tmp_path / "A"), inputs=[str(p) for p in second]))
    whole, a, b = kept(whole_dir), kept(tmp_path / "A"), kept(tmp_path / "B")
    agree = len(set(whole) & (set(a) | set(b))) / len(set(whole) | set(a) | set(b))
    assert agree >= 0.99, agree
    assert len(set(a.values()) | set(b.values())) == len(a) + len(b)  # no exact duplicate kept twice
