"""Near duplicates in scripts written without spaces (zh, ja, th, km, lo, my) are found at the same
recall as in Latin scripts: planted pairs from real UDHR articles, the same edit budget per
language (clustered substitutions and deletions of ~4 % of the text, characters for unspaced
scripts, words for spaced ones), the stage's own shingling, MinHash and LSH (default settings)."""

import random
import unicodedata

import pytest
import regex

from pipelines.corpus.config import DedupConfig
from pipelines.corpus.dedup import make_hasher, shingle_hashes, text_hash
from pipelines.corpus.dedup_engines import dedup_in_memory
from pipelines.corpus.normalize import normalize_text
from pipelines.readers import Record, read_records

from .conftest import RAW, truth  # noqa: F401 - fixture

NO_SPACE = ("zh", "ja", "th", "km", "lo", "my")
LATIN = ("en", "de", "fr", "es", "vi", "tr")


def edit(text: str, unspaced: bool, rng: random.Random, rate: float = 0.04) -> str:
    """One or two clustered spans of substitutions/deletions covering ``rate`` of the units."""
    units = list(text) if unspaced else text.split(" ")
    n = max(1, round(len(units) * rate))
    for span in (n // 2, n - n // 2) if n > 3 else (n,):
        start = rng.randrange(0, max(1, len(units) - span))
        for i in range(start, start + span):
            units[i] = "" if rng.random() < 0.4 else units[rng.randrange(len(units))]
    return ("" if unspaced else " ").join(u for u in units if unspaced or u)


@pytest.fixture(scope="module")
def articles(truth):  # noqa: F811
    """Language -> its UDHR articles (>= 60 characters) from the bundled corpus."""
    lang_of = {(t["file"], t["line"] if t["line"] is not None else t["row"]): t["expected_lang"]
               for t in truth if t["kind"] == "original" and (t["id"] or "").startswith("udhr-")}
    out: dict[str, list[str]] = {}
    for name in ("01-udhr-a.jsonl", "02-udhr-b.jsonl.gz", "03-udhr-c.parquet"):
        for rec in read_records(str(RAW / name), text_field="text"):
            lang = lang_of.get((name, rec.line)) if isinstance(rec, Record) else None
            text = rec.data.get("text") if isinstance(rec, Record) else None
            if lang in NO_SPACE + LATIN and isinstance(text, str) and len(text) >= 60:
                out.setdefault(lang, []).append(normalize_text(rec.data["text"]))
    return out


def technical(text: str, rng: random.Random) -> str:
    """``text`` with Latin names and options mixed in every ~12 characters, as technical writing in
    Chinese, Japanese or Thai has them ("使用Linux系统的ls命令")."""
    names = ("Linux", "ls", "API", "Python", "HTTP", "UTF", "v2", "JSON", "GPU", "sort")
    return "".join(c + (rng.choice(names) if i % 12 == 11 else "") for i, c in enumerate(text))


def reference_jaccard(a: str, b: str, unspaced: bool) -> float:
    """The truth's definition (data/README.md): character 5-grams without whitespace for unspaced
    scripts, word 5-grams elsewhere, independent of the stage's tokenizer."""
    def grams(t):
        units = list("".join(t.split())) if unspaced else regex.findall(r"\w+", t.lower())
        return {tuple(units[i:i + 5]) for i in range(max(1, len(units) - 4))}
    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y)


def recall_and_false_merges(docs: list[str], unspaced: bool, cfg: DedupConfig) -> tuple[float, int]:
    """Recall over the planted pairs that are near duplicates by the truth's definition (5-gram
    Jaccard >= 0.7), and originals removed as copies of another original."""
    rng = random.Random(7)
    copies = [edit(d, unspaced, rng) for d in docs]
    planted = {i for i, (d, c) in enumerate(zip(docs, copies)) if 0.7 <= reference_jaccard(d, c, unspaced) < 1}
    hasher = make_hasher(cfg.minhash, cfg.bands * cfg.rows, cfg.seed)
    rows = [{"path": "p", "line": i, "id": f"{'o' if i < len(docs) else 'c'}{i % len(docs)}", "text_hash": text_hash(t),
             "minhash": hasher.signature_of(t, cfg.ngram).tolist()}
            for i, t in enumerate(docs + copies)]
    decisions = dedup_in_memory(rows, cfg)
    found = sum(d["line"] - len(docs) in planted and d["duplicate_of"] == f"o{d['line'] - len(docs)}"
                for d in decisions)
    false = sum(d["line"] < len(docs) for d in decisions)  # an original article removed as another's copy
    assert len(planted) >= 10
    return found / len(planted), false


@pytest.mark.parametrize("minhash", ["numpy", "rensa"])
def test_unspaced_scripts_find_near_duplicates_as_well_as_latin(articles, minhash):
    if minhash == "rensa":
        pytest.importorskip("rensa")
    cfg = DedupConfig(minhash=minhash)
    recall = {}
    rng = random.Random(3)
    for lang in NO_SPACE + LATIN:
        docs = articles[lang]
        assert len(docs) >= 15, lang
        recall[lang], false = recall_and_false_merges(docs, lang in NO_SPACE, cfg)
        assert false == 0, (lang, false)
        if lang in NO_SPACE:
            recall[f"{lang}+latin"], false = recall_and_false_merges([technical(d, rng) for d in docs], True, cfg)
            assert false == 0, (lang, false)
    latin = sum(recall[lang] for lang in LATIN) / len(LATIN)
    for lang in recall:
        assert recall[lang] >= 0.9, (recall, latin)
    unspaced = [recall[k] for k in recall if k.split("+")[0] in NO_SPACE]
    assert sum(unspaced) / len(unspaced) >= latin - 0.05, (recall, latin)


@pytest.mark.parametrize("text", ["北京是中华人民共和国的首都", "ภาษาไทยเป็นภาษาราชการ", "ខ្ញុំស្រឡាញ់ភាសាខ្មែរ",
                                  "使用Linux系统的ls命令"])
def test_unspaced_text_is_shingled_by_characters(text):
    # one unit per character with its combining marks, one per Latin word: a 5-gram shingle per position
    latin = regex.findall(r"[A-Za-z]+", text)
    units = sum(1 for c in regex.sub(r"[A-Za-z]+", "", text) if not unicodedata.category(c).startswith("M")) + len(latin)
    assert len(shingle_hashes(text, 5)) == units - 4
    changed = text[:2] + "x" + text[3:]  # one character changed: at most 5 shingles change
    assert len(set(shingle_hashes(text, 5).tolist()) - set(shingle_hashes(changed, 5).tolist())) <= 5
