"""The bundled data under data/ agrees with its truth file, its README claims and itself.

These tests read the committed files with a deliberately small reference reader (bytes split on
LF, strict UTF-8, json.loads) that is independent of pipelines/, so they check the data, not a
reader under test.
"""

import gzip
import hashlib
import json
import os
import subprocess
import sys
import unicodedata
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DATA = Path(__file__).resolve().parents[2] / "data"
RAW = DATA / "corpus" / "raw"
MGTE_LANGS = set(
    "af ar az be bg bn ca ceb cs cy da de el en es et eu fa fi fr gl gu he hi hr ht hu hy id is it ja jv "
    "ka kk km kn ko ky lo lt lv mk ml mn mr ms my ne nl no pa pl pt qu ro ru si sk sl so sq sr sv sw ta "
    "te th tl tr uk ur vi yo zh".split())
KINDS = {"original", "exact_duplicate", "near_duplicate", "junk", "malformed"}
OUTCOMES = {"kept", "dropped", "quarantined", "quarantined_or_normalised", "skipped_or_quarantined",
            "quarantined_or_file_level"}
CHAR_LANGS = {"zh", "ja", "th", "km", "lo", "my"}


def read_jsonl(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def raw_lines(path: Path) -> list[bytes]:
    """Every line of a raw JSONL file, as bytes; for a truncated gzip, what raw zlib recovers."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = zlib.decompressobj(31).decompress(data)
    lines = data.split(b"\n")
    return lines[:-1] if lines and lines[-1] == b"" else lines


def strict_record(raw: bytes) -> dict | None:
    """The record if the line is a JSON object with a string `text` that is valid UTF-8, else None."""
    try:
        obj = json.loads(raw.decode("utf-8"))
        if isinstance(obj, dict) and isinstance(obj.get("text"), str):
            obj["text"].encode("utf-8")
            return obj
    except (UnicodeError, ValueError):
        pass
    return None


@pytest.fixture(scope="module")
def truth():
    return read_jsonl(DATA / "corpus" / "truth.jsonl")


@pytest.fixture(scope="module")
def raw_texts():
    """(file, line or row) -> record dict, for every record a strict reader accepts."""
    out = {}
    for path in sorted(RAW.iterdir()):
        if path.suffix == ".parquet":
            for i, rec in enumerate(pq.read_table(path).to_pylist()):
                if isinstance(rec["text"], str):
                    out[(path.name, i)] = rec
            continue
        for i, line in enumerate(raw_lines(path), start=1):
            rec = strict_record(line[3:] if i == 1 and line.startswith(b"\xef\xbb\xbf") else line)
            if rec is not None:
                out[(path.name, i)] = rec
    return out


def where(row: dict) -> tuple[str, int]:
    return row["file"], row["row"] if row["row"] is not None else row["line"]


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def shingles(text: str, lang: str) -> set:
    t = unicodedata.normalize("NFC", text).lower()
    units = [c for c in t if not c.isspace()] if lang in CHAR_LANGS else t.split()
    return {tuple(units[i:i + 5]) for i in range(len(units) - 4)}


def test_truth_has_one_row_per_raw_record(truth):
    rows = [r for r in truth if r["scope"] == "record"]
    assert len({where(r) for r in rows}) == len(rows)
    for path in sorted(RAW.iterdir()):
        mine = sorted(where(r)[1] for r in rows if r["file"] == path.name)
        if path.suffix == ".parquet":
            assert mine == list(range(pq.read_metadata(path).num_rows)), path.name
        else:
            assert mine == list(range(1, len(raw_lines(path)) + 1)), path.name
    files = [r for r in truth if r["scope"] == "file"]
    assert [(r["file"], r["line"], r["kind"]) for r in files] == [("11-truncated.jsonl.gz", -1, "malformed")]


def test_truth_vocabulary_and_sizes(truth):
    rows = [r for r in truth if r["scope"] == "record"]
    assert 500 <= len(rows) <= 3000
    for r in rows:
        assert r["kind"] in KINDS and r["expected_outcome"] in OUTCOMES, r
        if r["kind"] in ("junk", "malformed"):
            assert r["expected_lang"] is None, r
        else:
            assert r["expected_lang"] in MGTE_LANGS, r
    kinds = Counter(r["kind"] for r in rows)
    assert kinds["exact_duplicate"] >= 30 and kinds["near_duplicate"] >= 30
    assert kinds["junk"] >= 30 and kinds["malformed"] >= 15
    originals = Counter(r["expected_lang"] for r in rows if r["kind"] == "original")
    assert set(originals) == MGTE_LANGS
    assert {"zh", "ja", "th", "km", "lo", "my"} <= {r["expected_lang"] for r in rows if r["kind"] == "near_duplicate"}
    junk_types = {r["junk_type"] for r in rows if r["kind"] == "junk"}
    assert {"boilerplate", "repeated_lines", "repeated_ngrams", "random_symbols", "too_short", "empty_text",
            "lang_not_in_set", "oversized"} <= junk_types
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 8 * 2**20


def test_readable_records_match_truth(truth, raw_texts):
    """A record is readable by the strict reader exactly when the truth does not expect it to be
    quarantined; ids agree; the truncated file yields only its complete records to Python's gzip."""
    for r in truth:
        if r["scope"] != "record":
            continue
        rec = raw_texts.get(where(r))
        if r["expected_outcome"] in ("quarantined", "skipped_or_quarantined", "quarantined_or_file_level"):
            assert rec is None, r
        elif r["expected_outcome"] in ("kept", "dropped"):
            assert rec is not None, r
            assert rec["id"] == r["id"], r
    with gzip.open(RAW / "11-truncated.jsonl.gz", "rb") as f, pytest.raises(EOFError):
        seen = []
        for line in f:
            seen.append(line)
    assert len(seen) == sum(r["file"] == "11-truncated.jsonl.gz" and r["kind"] == "original" for r in truth)
    big = [rec for rec in raw_texts.values() if len(rec["text"].encode()) > 2_000_000]
    assert len(big) == 1 and big[0]["id"] == "oversized-1"


def test_duplicates_point_back_to_earlier_originals(truth, raw_texts):
    by_where = {f"{r['file']}:{where(r)[1]}": r for r in truth if r["scope"] == "record"}
    for r in truth:
        if r["kind"] not in ("exact_duplicate", "near_duplicate"):
            continue
        orig = by_where[r["dup_of_ref"]]
        assert orig["kind"] == "original" and orig["id"] == r["dup_of"], r
        assert where(orig) < where(r), r
        a, b = raw_texts[where(orig)]["text"], raw_texts[where(r)]["text"]
        if r["kind"] == "exact_duplicate":
            assert normalise(a) == normalise(b), r
        else:
            assert normalise(a) != normalise(b), r
            assert r["shingle"] == ("char5" if r["expected_lang"] in CHAR_LANGS else "word5")
            sa, sb = shingles(a, r["expected_lang"]), shingles(b, r["expected_lang"])
            j = len(sa & sb) / len(sa | sb)
            assert j >= 0.7 and abs(j - r["similarity"]) < 1e-3, (r, j)
    variants = Counter(r["variant"] for r in truth if r["kind"] == "exact_duplicate")
    assert {"identical", "whitespace", "nfd", "found"} <= set(variants)


def test_originals_are_not_near_each_other(truth, raw_texts):
    """The gap that makes the truth unambiguous: originals < 0.5, duplicates >= 0.7."""
    by_lang = defaultdict(list)
    for r in truth:
        if r["kind"] == "original" and where(r) in raw_texts:
            by_lang[r["expected_lang"]].append(shingles(raw_texts[where(r)]["text"], r["expected_lang"]))
    for lang in ("en", "ko", "zh", "ja", "th", "de"):
        items = [s for s in by_lang[lang] if len(s) > 20]
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                assert len(a & b) / len(a | b) < 0.5, lang


def test_pairs_are_well_formed_and_heldout_is_disjoint():
    splits = {}
    for split in ("train", "heldout"):
        rows = [r for p in sorted((DATA / "pairs" / split).iterdir()) for r in read_jsonl(p)]
        for r in rows:
            assert r["query"].strip() and r["positive"].strip() and r["query"] != r["positive"], r
            assert r["source"] and r["pair_type"] in ("translation", "title_body", "qa", "dialogue"), r
            assert all(part in MGTE_LANGS for part in r["lang"].split("-")), r
            assert unicodedata.is_normalized("NFC", r["query"] + r["positive"])
        assert len({r["id"] for r in rows}) == len(rows)
        splits[split] = rows
    train, heldout = splits["train"], splits["heldout"]
    assert 2000 <= len(train) + len(heldout) <= 8000
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert not {(r["query"], r["positive"]) for r in train} & {(r["query"], r["positive"]) for r in heldout}
    assert {r["pair_type"] for r in heldout} == {"translation", "title_body", "qa", "dialogue"}
    assert len({r["lang"] for r in train if r["pair_type"] == "translation"}) == 74
    assert len({r["lang"] for r in train if r["pair_type"] in ("qa", "dialogue")}) >= 20


def test_eval_is_valid_beir_and_not_in_the_pairs():
    beir = DATA / "eval" / "tiny-beir"
    corpus = read_jsonl(beir / "corpus.jsonl")
    queries = read_jsonl(beir / "queries.jsonl")
    lines = (beir / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    qrels = [line.split("\t") for line in lines[1:]]
    doc_ids, query_ids = {d["_id"] for d in corpus}, {q["_id"] for q in queries}
    assert len(doc_ids) == len(corpus) and len(query_ids) == len(queries)
    assert 200 <= len(corpus) <= 1000 and 50 <= len(queries) <= 200
    assert all(q in query_ids and d in doc_ids and s == "1" for q, d, s in qrels)
    assert {q for q, _, _ in qrels} == query_ids
    assert all(d["lang"] in MGTE_LANGS and d["text"] for d in corpus)
    assert len({q["lang"] for q in queries}) >= 10
    assert sum(len(d["text"]) >= 8000 for d in corpus) >= 3
    # cross-lingual queries never share a language with their relevant documents
    lang_of_doc = {d["_id"]: d["lang"] for d in corpus}
    lang_of_query = {q["_id"]: q["lang"] for q in queries}
    xling = {q["_id"] for q in queries if q["task"] == "udhr_crosslingual"}
    assert all(lang_of_doc[d] != lang_of_query[q] for q, d, _ in qrels if q in xling)
    pair_texts = set()
    for split in ("train", "heldout"):
        for p in sorted((DATA / "pairs" / split).iterdir()):
            for r in read_jsonl(p):
                pair_texts.update((r["query"], r["positive"]))
    assert not {q["text"] for q in queries} & pair_texts
    relevant = {d for _, d, _ in qrels}
    assert not {d["text"] for d in corpus if d["_id"] in relevant} & pair_texts


def test_build_info_matches_the_committed_files():
    info = json.loads((DATA / "build_info.json").read_text(encoding="utf-8"))
    outputs = sorted(str(p.relative_to(DATA)) for sub in ("corpus", "pairs", "eval")
                     for p in (DATA / sub).rglob("*") if p.is_file())
    docs_sample = [o for o in outputs if o.startswith("corpus/docs")]  # data/build_docs_sample.py's own
    assert sorted(info["outputs"]) == sorted(set(outputs) - set(docs_sample))
    for name, meta in info["outputs"].items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == meta["sha256"], name


@pytest.mark.skipif(not os.environ.get("MGTE_DATA_SOURCES"),
                    reason="optional: set MGTE_DATA_SOURCES to a folder with the pinned source archives")
def test_rebuild_is_byte_identical():
    proc = subprocess.run([sys.executable, str(DATA / "build_bundled.py"), "--sources",
                           os.environ["MGTE_DATA_SOURCES"], "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
