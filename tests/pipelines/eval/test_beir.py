"""Reading BEIR directories: every record accounted for, bad lines quarantined with path and line,
drops with their exact reason, judgements of missing documents kept (trec_eval counts them)."""

import gzip
import json

import pytest

from pipelines.eval.beir import query_languages, read_beir
from foundation.errors import BadInputError


def _messy(root):
    (root / "qrels").mkdir(parents=True)
    corpus = [
        json.dumps({"_id": "d1", "title": "T", "text": "one"}),
        json.dumps({"_id": 2, "text": "int id, no title", "lang": "de"}),  # int id -> "2", missing title -> ""
        '{"_id": "d3", "text": ',  # bad json
        json.dumps({"_id": "d4", "title": None, "text": 5}),  # text not a string
        json.dumps({"_id": "d 5", "text": "whitespace id"}),  # cannot live in a TREC run
        json.dumps({"_id": "d1", "title": "", "text": "duplicate"}),
        json.dumps({"_id": "d6", "title": " ", "text": "  "}),  # empty
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"_id": "d7", "title": "", "text": "ok", "lang": "fr"}),
    ]
    body = ("\n".join(corpus) + "\n").encode() + b'{"_id": "d8", "text": "bad \xff utf8"}\n'
    (root / "corpus.jsonl").write_bytes(body)
    queries = [
        json.dumps({"_id": "q1", "text": "first", "lang": "en"}),
        json.dumps({"_id": "q2", "text": "no judgements"}),
        json.dumps({"_id": "q3", "text": ""}),
        json.dumps({"_id": "q1", "text": "dup"}),
        "[1, 2]",
        json.dumps({"_id": "q4", "text": "lang from docs"}),
    ]
    with gzip.open(root / "queries.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(queries) + "\n")
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        "q1\td1\t1\n"
        "q1\td7\t2\n"
        "q1\td1\t0\n"          # duplicate pair: the last one wins
        "q1\tghost\t1\n"       # document not in the corpus: kept
        "q3\td1\t1\n"          # query dropped as empty
        "q9\td1\t1\n"          # query not in queries.jsonl
        "q4 0 2 1\n"           # TREC 4-column qrels
        "q4\td7\tx\n"          # bad score
        "q4\td7\n"             # bad columns
        "q4\td7\t1.0\n"
        "\n")
    return root


def test_messy_directory_accounting(tmp_path):
    beir = read_beir([str(_messy(tmp_path / "b"))])
    acc = {k: v.as_dict() for k, v in beir.accounts.items()}
    assert beir.corpus.ids == ["d1", "2", "d7"]
    assert beir.corpus.titles == ["T", "", ""]
    assert acc["corpus"] == {**acc["corpus"], "input": 10, "kept": 3, "quarantined": 5, "dropped": 2,
                             "dropped_by_reason": {"duplicate_id": 1, "empty_text": 1}}
    by_line = {(r["path"].rsplit("/", 1)[-1], r["line"]): r for r in beir.quarantine}
    assert by_line[("corpus.jsonl", 3)]["error"].startswith("bad_json")
    assert by_line[("corpus.jsonl", 4)]["field"] == "text"
    assert by_line[("corpus.jsonl", 5)]["error"].startswith("bad_id")
    assert by_line[("corpus.jsonl", 8)]["field"] == "_id"
    assert by_line[("corpus.jsonl", 10)]["error"].startswith("invalid_utf8")
    assert by_line[("queries.jsonl.gz", 5)]["error"].startswith("not_an_object")
    assert by_line[("test.tsv", 9)]["error"].startswith("bad_score")
    assert by_line[("test.tsv", 10)]["error"].startswith("bad_columns")

    assert beir.queries.ids == ["q1", "q4"]
    assert acc["queries"]["dropped_by_reason"] == {"duplicate_id": 1, "empty_text": 1, "no_qrels": 1}
    assert acc["queries"]["input"] == 6 and acc["queries"]["quarantined"] == 1 and acc["queries"]["kept"] == 2
    assert beir.qrels["q1"] == {"d1": 0, "d7": 2, "ghost": 1}
    assert beir.qrels["q4"] == {"2": 1, "d7": 1}
    assert acc["qrels"] == {**acc["qrels"], "input": 10, "kept": 7, "dropped": 1, "quarantined": 2}
    assert beir.stats == {"qrels_queries": 4, "qrels_queries_not_evaluated": 2, "qrels_doc_not_in_corpus": 1,
                          "queries_without_relevant_docs": 0}
    for a in acc.values():
        assert a["input"] == a["kept"] + a["dropped"] + a["quarantined"]
    reasons = {(r["kind"], r["id"]): r["reason"] for r in beir.dropped}
    assert reasons[("query", "q2")] == "no_qrels" and reasons[("qrel", "q1/d1")] == "duplicate_qrel"
    assert beir.query_langs == ["en", "de"]  # q4: majority language of its relevant documents


def test_query_language_fallback_is_deterministic(tmp_path):
    from pipelines.eval.beir import Texts

    corpus = Texts(ids=["a", "b"], titles=["", ""], texts=["x", "y"], langs=["fr", "de"])
    queries = Texts(ids=["q", "r"], titles=["", ""], texts=["", ""], langs=[None, None])
    assert query_languages(queries, corpus, {"q": {"a": 1, "b": 1}, "r": {"a": 0}}) == ["de", "und"]


def test_missing_files_and_several_inputs_fail_clearly(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(BadInputError, match="no corpus.jsonl"):
        read_beir([str(tmp_path / "x")])
    with pytest.raises(BadInputError, match="one BEIR directory"):
        read_beir([str(tmp_path / "x"), str(tmp_path)])


def test_pairs_become_a_beir_set_with_merged_queries_and_documents(tmp_path):
    from pipelines.pairs import read_raw_pairs
    from pipelines.eval.beir import write_beir_from_pairs

    rows = [
        {"id": "a", "query": "Article 19", "positive": "Jeder hat das Recht", "lang": "en-de", "source": "tr"},
        {"id": "b", "query": "Article 19", "positive": "Chacun a le droit", "lang": "en-fr", "source": "tr"},
        {"id": "c", "query": "Artikel 19", "positive": "Jeder hat das Recht", "lang": "nl-de", "source": "tr"},
        {"id": "d", "query": "Why?", "positive": "Because.", "lang": "en", "source": "tr"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tables, counts = read_raw_pairs([str(tmp_path / "p.jsonl")])
    assert counts["counts"] == {"input": 4, "kept": 4, "dropped": 0, "quarantined": 0}
    assert write_beir_from_pairs(tables["tr"], tmp_path / "beir") == {
        "pairs": 4, "queries": 3, "documents": 3, "judgements": 4}
    beir = read_beir([str(tmp_path / "beir")])
    text_of = dict(zip(beir.corpus.ids, beir.corpus.texts))
    judged = {q: sorted(text_of[d] for d in docs) for q, docs in beir.qrels.items()}
    by_text = {t: judged[q] for q, t in zip(beir.queries.ids, beir.queries.texts)}
    assert by_text == {"Article 19": ["Chacun a le droit", "Jeder hat das Recht"],
                       "Artikel 19": ["Jeder hat das Recht"], "Why?": ["Because."]}
    assert dict(zip(beir.queries.texts, beir.query_langs)) == {"Article 19": "en", "Artikel 19": "nl", "Why?": "en"}
    assert sorted(beir.corpus.langs) == ["de", "en", "fr"]


def test_pairs_set_with_a_dev_split_shares_no_query_with_test(tmp_path):
    import pyarrow as pa

    from pipelines.eval.beir import write_beir_from_pairs
    from pipelines.pairs.records import text_hash

    texts = [f"question {i}" for i in range(200)]
    table = pa.table({"query": texts, "positive": [f"answer {i}" for i in range(200)],
                      "query_hash": [text_hash(t) for t in texts], "positive_hash": [text_hash(f"answer {i}")
                                                                             for i in range(200)],
                      "lang": ["en"] * 200})
    counts = write_beir_from_pairs(table, tmp_path / "beir", dev_share=0.25)
    test, dev = read_beir([str(tmp_path / "beir")]), read_beir([str(tmp_path / "beir")], "dev")
    assert not set(test.qrels) & set(dev.qrels) and len(test.qrels) + len(dev.qrels) == 200
    assert 30 <= len(dev.qrels) <= 70 and counts["dev_queries"] == len(dev.qrels) == 200 - counts["queries"]
    assert len(test.corpus) == len(dev.corpus) == 200  # one corpus, every positive
    dev_ids = {q for q in dev.qrels if int(q[2:10], 16) < 16**8 // 4}
    assert dev_ids == set(dev.qrels)  # the rule: the query hash's first 8 hex digits below dev_share
    write_beir_from_pairs(table, tmp_path / "again", dev_share=0.25)
    assert (tmp_path / "again/qrels/dev.tsv").read_bytes() == (tmp_path / "beir/qrels/dev.tsv").read_bytes()
