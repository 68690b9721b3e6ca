"""Decontamination (pipelines/decontam.py): evaluation queries and documents planted, exact and near
(a few words changed), in Latin, Cyrillic, CJK, Arabic and Devanagari text, into corpus input, pair
input and a fine-tuning set come out as `eval_overlap`, and nothing else does; the manifest counts
them; the DAGs decontaminate against their own eval sets by default."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from foundation.config import load_config
from foundation.errors import BadInputError, StageConflict
from pipelines.decontam import REASON, DecontamIndex

ROOT = Path(__file__).resolve().parents[2]
TINY_BEIR = ROOT / "data" / "eval" / "tiny-beir"
SCRIPTS = {"en": "eng", "ru": "rus", "zh": "cmn_hans", "ar": "arb", "hi": "hin"}  # Latin .. Devanagari


def _udhr(lang: str, article: int) -> str:
    """A UDHR article as tiny-beir's queries hold it (articles 23-30 in each language)."""
    qid = f"q-udhr-{SCRIPTS[lang]}-a{article}"
    for line in (TINY_BEIR / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["_id"] == qid:
            return rec["text"]
    raise KeyError(qid)


def _tokens(lang: str, text: str) -> list[str]:
    return list(text) if lang == "zh" else text.split()


def _join(lang: str, tokens: list[str]) -> str:
    return "".join(tokens) if lang == "zh" else " ".join(tokens)


def near_copy(lang: str, text: str) -> str:
    """Two words (characters for Chinese) replaced: a near copy."""
    tokens = _tokens(lang, text)
    for pos in (len(tokens) // 3, 2 * len(tokens) // 3):
        tokens[pos] = "某" if lang == "zh" else "qwerty"
    return _join(lang, tokens)


def exact_copy(text: str) -> str:
    """Only whitespace differs: the same normalised text."""
    return "  " + text.replace(" ", "  \t", 3) + "\n\n"


def mixed(lang: str, text: str, other: str) -> str:
    """The first 70% of ``text``, then another article to the same length: it shares an LSH band
    with ``text`` (in most scripts) at an estimated Jaccard of ~0.5, under the threshold."""
    a, b = _tokens(lang, text), _tokens(lang, other)
    keep = int(len(a) * 0.7)
    return _join(lang, a[:keep] + b[: len(a) - keep])


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory) -> Path:
    """A BEIR set without a train split: article 23 of each language as a query, article 26 as a
    judged document (with a title); every one of its texts is an evaluation text."""
    root = tmp_path_factory.mktemp("decontam") / "udhr-eval"
    (root / "qrels").mkdir(parents=True)
    queries = [{"_id": f"q-{lang}", "text": _udhr(lang, 23)} for lang in SCRIPTS]
    docs = [{"_id": f"d-{lang}", "title": f"Article 26 ({lang})", "text": _udhr(lang, 26)} for lang in SCRIPTS]
    for name, rows in (("queries.jsonl", queries), ("corpus.jsonl", docs)):
        (root / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"q-{lang}\td-{lang}\t1\n" for lang in SCRIPTS))
    return root


def planted_texts() -> tuple[dict[str, tuple[str, str, str]], dict[str, str]]:
    """{id: (text, expected match, eval ref)} planted, and {id: text} controls (other articles of the
    same languages, and texts that share a third of an evaluation text)."""
    planted, controls = {}, {}
    for lang in SCRIPTS:
        planted[f"exact-q-{lang}"] = (exact_copy(_udhr(lang, 23)), "exact", f"udhr-eval/query/q-{lang}")
        planted[f"near-d-{lang}"] = (near_copy(lang, _udhr(lang, 26)), "near", f"udhr-eval/doc/d-{lang}")
        for article in (24, 25, 27, 29):
            controls[f"other-{lang}-{article}"] = _udhr(lang, article)
        controls[f"mixed-{lang}"] = mixed(lang, _udhr(lang, 26), _udhr(lang, 29))
    return planted, controls


# ---- the index -------------------------------------------------------------------------------------
def test_index_finds_exact_and_near_copies_in_five_scripts_and_nothing_else(eval_set):
    index = DecontamIndex([str(eval_set)])
    assert len(index.refs) == 15  # 5 queries, 5 documents as text and as title + text
    planted, controls = planted_texts()
    for key, (text, kind, ref) in planted.items():
        hit = index.match(text)
        assert hit is not None and (hit.match, hit.ref) == (kind, ref), (key, hit)
        assert (hit.similarity == 1.0) if kind == "exact" else (0.6 <= hit.similarity < 1.0), (key, hit)
    for key, text in controls.items():
        assert index.match(text) is None, key
    # some controls are LSH candidates that only the Jaccard check rejects
    collide = [k for k, text in controls.items()
               if any(key in index.buckets for key in index._band_keys(index.signature(text), 25, 5))]
    assert {"mixed-en", "mixed-ru", "mixed-ar"} <= set(collide), collide
    # a document with a title is also found as title + text (how eval and mine join them)
    assert index.match(f"Article 26 (ru)\n{_udhr('ru', 26)}").match == "exact"
    assert index.match("  ... !!! ") is None  # no words: no near match with other wordless texts


def test_a_set_with_a_train_split_holds_only_its_held_out_queries_and_judged_documents(tmp_path, eval_set):
    root = tmp_path / "shared"
    (root / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (root / name).write_bytes((eval_set / name).read_bytes())
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq-ru\td-ru\t1\nq-ru\td-zh\t0\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq-en\td-en\t1\n")
    index = DecontamIndex([str(tmp_path)])  # a directory holding sets
    assert sorted(set(index.refs)) == ["shared/doc/d-ru", "shared/query/q-ru"]
    assert index.match(_udhr("en", 23)) is None and index.match(_udhr("zh", 26)) is None


def test_a_missing_or_unusable_directory_is_one_line(tmp_path):
    with pytest.raises(BadInputError, match=r"^decontaminate: .*nope does not exist$"):
        DecontamIndex([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="is not an evaluation set") as err:
        DecontamIndex([str(tmp_path / "empty")])
    assert "\n" not in str(err.value)


# ---- corpus ----------------------------------------------------------------------------------------
def _corpus_input(tmp_path: Path) -> Path:
    planted, controls = planted_texts()
    rows = [{"id": k, "text": t} for k, (t, _, _) in planted.items()] + [{"id": k, "text": t} for k, t in
                                                                      controls.items()]
    rows.sort(key=lambda r: r["id"])
    path = tmp_path / "in" / "mixed.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _corpus(tmp_path, eval_set, name, *sets):
    from pipelines import corpus

    cfg = load_config(corpus.Config, ROOT / "dags/configs/corpus/tiny.yaml",
                      [f"output={tmp_path / name}", f"input=['{_corpus_input(tmp_path)}']",
                       f"decontaminate=['{eval_set}']", "progress=false", *sets])
    return corpus.run(cfg), tmp_path / name


def _overlaps(out: Path, id_field: str) -> dict[str, dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [r for f in manifest["outputs"]["dropped"] for r in pq.read_table(out / f).to_pylist()]
    return {r[id_field]: r for r in rows if r["reason"] == REASON}


def test_corpus_drops_exactly_the_planted_documents_and_counts_them(tmp_path, eval_set):
    manifest, out = _corpus(tmp_path, eval_set, "local", "engine=local")
    planted, controls = planted_texts()
    got = _overlaps(out, "id")
    assert sorted(got) == sorted(planted)
    for key, row in got.items():
        detail = json.loads(row["scores"])[REASON]
        assert (detail["match"], row["duplicate_of"]) == planted[key][1:], key
    c = manifest["counts"]
    assert c["input"] == len(planted) + len(controls) == c["kept"] + c["dropped"] + c["quarantined"]
    assert manifest["dropped_by_reason"][REASON] == len(planted)
    assert manifest["extra"]["decontaminate"]["dropped"] == len(planted)
    assert manifest["extra"]["decontaminate"]["sets"][0]["queries"] == 5
    from pipelines.audit import write_audit  # the audit page shows the reason and samples of it

    page = write_audit(out).read_text(encoding="utf-8")
    assert f"{REASON} ({len(planted)})" in page and "udhr-eval/" in page  # a sample names its eval text
    # the same documents on Beam (in-process runner), the index built where the tasks run
    beam_manifest, beam_out = _corpus(tmp_path, eval_set, "beam", "engine=beam", "beam.options=--runner=FnApiRunner")
    assert {k: (r["duplicate_of"], r["similarity"]) for k, r in _overlaps(beam_out, "id").items()} == \
        {k: (r["duplicate_of"], r["similarity"]) for k, r in got.items()}
    assert beam_manifest["counts"] == manifest["counts"]


# ---- pairs -----------------------------------------------------------------------------------------
def _pairs_cfg(tmp_path, inputs, eval_sets, out="out"):
    from pipelines import pairs

    return load_config(pairs.Config, None, ["tokenizer=null", "lang.identify=false", "engine=local",
                                            "progress=false"],
                       data={"input": [str(p) for p in inputs], "output": str(tmp_path / out),
                             "decontaminate": [str(s) for s in eval_sets]})


def _pair_input(tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str, str]]]:
    """Planted pairs (the evaluation text on the query side for exact copies, on the positive side
    for near ones; the other side a control text) and control pairs."""
    planted, controls = planted_texts()
    other = list(controls.values())
    rows, expected = [], {}
    for i, (key, (text, kind, ref)) in enumerate(planted.items()):
        side = "query" if kind == "exact" else "positive"
        rows.append({"id": key, "query": text if side == "query" else other[i],
                     "positive": text if side == "positive" else other[-1 - i], "source": "planted"})
        expected[key] = (side, kind, ref)
    for i, (key, text) in enumerate(controls.items()):
        rows.append({"id": key, "query": f"Question {i}: {text[:60]}", "positive": text, "source": "controls"})
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path, expected


def test_pairs_drop_a_pair_whose_query_or_positive_overlaps_naming_the_side(tmp_path, eval_set):
    from pipelines import pairs

    path, expected = _pair_input(tmp_path)
    manifest = pairs.run(_pairs_cfg(tmp_path, [path], [eval_set]))
    got = _overlaps(tmp_path / "out", "pair_id")
    assert sorted(got) == sorted(expected)
    for key, row in got.items():
        d = json.loads(row["scores"])[REASON]
        assert (d["side"], d["match"], d["eval"]) == expected[key], key
    assert manifest["dropped_by_reason"] == {REASON: len(expected)}
    assert manifest["counts"]["kept"] == manifest["counts"]["input"] - len(expected)
    assert manifest["extra"]["decontaminate"]["dropped"] == len(expected)
    from pipelines.audit import write_audit

    assert REASON in write_audit(tmp_path / "out").read_text(encoding="utf-8")

    # a rerun against changed evaluation files is refused in one line; so is a missing directory
    (eval_set / "qrels" / "test.tsv").write_text((eval_set / "qrels" / "test.tsv").read_text() + "q-en\td-ru\t1\n")
    try:
        with pytest.raises(StageConflict, match="decontaminated against other evaluation files"):
            pairs.run(_pairs_cfg(tmp_path, [path], [eval_set]))
    finally:
        lines = (eval_set / "qrels" / "test.tsv").read_text().splitlines()
        (eval_set / "qrels" / "test.tsv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BadInputError, match="^decontaminate: .*missing does not exist$"):
        pairs.run(_pairs_cfg(tmp_path, [path], [tmp_path / "missing"], out="out2"))
    assert not (tmp_path / "out2").exists()  # refused before any work


# ---- fine-tuning data read by mining ---------------------------------------------------------------
def test_mine_drops_overlapping_queries_and_positives_and_leaves_out_overlapping_negatives(tmp_path, eval_set,
                                                                                            monkeypatch):
    from pipelines import mine
    from tests.pipelines.mine.conftest import config, install_fake, read_dropped, read_rows

    install_fake(monkeypatch)
    planted, controls = planted_texts()
    names = sorted(controls)
    rows = [
        {"query_id": "q-plant", "query": planted["exact-q-ar"][0], "positive": controls[names[0]]},
        {"query_id": "p-plant", "query": "question about article 26", "positive": planted["near-d-hi"][0]},
        # only a given negative overlaps: the pair is kept, that negative left out
        {"query_id": "n-plant", "query": "question about article 24", "positive": controls[names[1]],
         "negatives": [planted["near-d-zh"][0], controls[names[2]]]},
    ] + [{"query_id": f"c{i}", "query": f"question {i} {n}", "positive": controls[n]} for i, n in enumerate(names[3:])]
    path = tmp_path / "ft" / "set.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    manifest = mine.run(config(tmp_path, [path], "num_negatives=2", decontaminate=[str(eval_set)]))
    dropped = {r["query_id"]: json.loads(r["scores"])[REASON] for r in read_dropped(tmp_path / "out")
               if r["reason"] == REASON}
    assert {k: (v["side"], v["match"], v["eval"]) for k, v in dropped.items()} == {
        "q-plant": ("query", "exact", "udhr-eval/query/q-ar"), "p-plant": ("positive", "near", "udhr-eval/doc/d-hi")}
    assert manifest["dropped_by_reason"].get(REASON) == 2
    assert manifest["extra"]["decontaminate"]["negatives_left_out"] == 1
    kept = {r["query_id"]: r for r in read_rows(tmp_path / "out")}
    assert "n-plant" in kept and planted["near-d-zh"][0] not in kept["n-plant"]["negatives"]
    assert controls[names[2]] in kept["n-plant"]["negatives"]  # the other given negative stays


# ---- the DAGs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dag_name", ["full", "finetune"])
def test_the_dags_decontaminate_their_training_data_against_their_own_eval_sets(tmp_path, dag_name):
    from dags.runner import _step_config, load_dag, load_dag_config

    dag = load_dag(dag_name)
    config = ROOT / "dags" / "configs" / dag_name / "tiny.yaml"
    cfg = load_dag_config(dag, str(config), [])
    evals = {str(Path(p).resolve()) for s in dag.steps if s.stage == "eval" for p in cfg.steps[s.name].input}
    feeding = [s for s in dag.steps if s.stage in ("corpus", "pairs", "mine")]
    assert evals and feeding
    for step in feeding:
        _module, stage_cfg = _step_config(step, cfg.steps[step.name], tmp_path, config.parent)
        assert {str(Path(p).resolve()) for p in stage_cfg.decontaminate} == evals, step.name
