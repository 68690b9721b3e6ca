import unicodedata

import numpy as np
import pytest

from pipelines.corpus.config import QualityConfig
from pipelines.corpus.dedup import (
    MinHasher,
    exact_group_decisions,
    jaccard_estimate,
    near_duplicate_decisions,
    shingle_hashes,
    text_hash,
)
from pipelines.corpus.dedup_engines import dedup_in_memory
from pipelines.corpus.config import DedupConfig
from pipelines.corpus.langs import MGTE_LANGS, to_mgte
from pipelines.corpus.normalize import normalize_text
from pipelines.corpus.quality import TOKENIZER, QualityFilters, top_ngram_reason


def test_normalize_nfc_controls_and_whitespace():
    nfd = unicodedata.normalize("NFD", "Café  déjà\u00a0vu")
    assert normalize_text(f"  {nfd}\r\n\r\n\r\n\x00line\ttwo \ufeff") == "Café déjà vu\n\nline two"
    assert normalize_text(nfd) == normalize_text("Café déjà vu")


@pytest.mark.parametrize("label,code", [("__label__zh", "zh"), ("zh-tw", "zh"), ("cmn_Hant", "zh"), ("zh_Hans", "zh"),
                                        ("__label__nb", "no"), ("nno_Latn", "no"), ("fil", "tl"), ("eng_Latn", "en"),
                                        ("__label__la", "la"), ("EN", "en")])
def test_identifier_labels_map_to_mgte_codes(label, code):
    assert to_mgte(label) == code


def test_language_list_is_the_papers():
    assert len(MGTE_LANGS) == 75 and "zh" in MGTE_LANGS and "zh-cn" not in MGTE_LANGS


def test_tokenizer_handles_scripts_without_spaces():
    assert TOKENIZER.word_tokenize("北京是首都") == ["北", "京", "是", "首", "都"]
    assert TOKENIZER.word_tokenize("ภาษาไทย") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย"]
    assert TOKENIZER.word_tokenize("can't stop, won't stop") == ["can't", "stop", ",", "won't", "stop"]
    assert TOKENIZER.word_tokenize("ക്\u200dഷ") == ["ക്\u200dഷ"]  # ZWJ stays inside a Malayalam word


GOOD_EN = ("The committee met on Tuesday to discuss the budget for the coming year. Members agreed that the "
           "library should stay open longer in the evenings, and that the school needs new books for its "
           "science classes. A local baker offered to donate bread for the spring festival, which will be held "
           "in the park near the river if the weather is good. The mayor thanked everyone for coming.")


@pytest.mark.parametrize("text,lang,reason", [
    (GOOD_EN, "en", None),
    ("Too short to be a document.", "en", "gopher_short_doc"),
    ("\n".join(["Home | About | Contact | Login"] * 12), "en", "gopher_rep_dup_line_frac"),
    (GOOD_EN + " " + "buy cheap watches online " * 12, "en", "gopher_rep_duplicated_5_n_grams"),
    (GOOD_EN + "\n" + "\n".join(["Click here to subscribe to our newsletter today"] * 6), "en", "gopher_rep_dup_line_frac"),
    ("lorem ipsum " + GOOD_EN, "en", "c4_lorem_ipsum"),
    (GOOD_EN.replace(".", " {x}."), "en", "c4_curly_bracket"),
    ("北京是中华人民共和国的首都，也是全国的政治、文化中心。长城是古代中国为抵御外敌而修建的军事工程，"
     "绵延数千公里。故宫是明清两代的皇家宫殿，现在是世界上规模最大的博物馆之一。黄河是中国的第二长河，"
     "被称为中华民族的母亲河。每年春节，人们都会回家与家人团聚，吃饺子、放鞭炮、贴春联。", "zh", None),
])
def test_quality_reasons_per_example(text, lang, reason):
    cfg = QualityConfig()
    got, scores = QualityFilters(cfg).score(normalize_text(text), lang)
    assert got == reason, (got, scores)


def test_top_ngram_rule_counts_only_repeated_ngrams():
    short = "Everyone has the right to life, liberty and security of person."
    words = TOKENIZER.word_tokenize(short)
    assert top_ngram_reason(words, len(short), ((2, 0.2), (3, 0.18)), " ") is None  # datatrove would reject it
    spam = "cheap watches cheap watches cheap watches and more"
    assert top_ngram_reason(TOKENIZER.word_tokenize(spam), len(spam), ((2, 0.2),), " ") == "gopher_rep_top_2_gram"
    zh = "北京欢迎你北京欢迎你北京欢迎你"  # graphemes are joined without spaces: 4-gram "北京欢迎" = 4 chars
    assert top_ngram_reason(TOKENIZER.word_tokenize(zh), len(zh), ((4, 0.2),), "") == "gopher_rep_top_4_gram"


def test_minhash_estimates_jaccard():
    words = [f"w{i}" for i in range(400)]
    a = " ".join(words)
    b = " ".join(words[:360] + [f"x{i}" for i in range(40)])
    sa, sb = set(shingle_hashes(a, 5)), set(shingle_hashes(b, 5))
    true = len(sa & sb) / len(sa | sb)
    hasher = MinHasher(256, seed=3)
    est = jaccard_estimate(hasher.signature(shingle_hashes(a, 5)), hasher.signature(shingle_hashes(b, 5)))
    assert abs(est - true) < 0.08
    assert np.array_equal(hasher.signature(shingle_hashes(a, 5)), MinHasher(256, seed=3).signature(shingle_hashes(a, 5)))


def test_exact_survivor_is_the_earliest_record():
    survivor, decisions = exact_group_decisions([("b.jsonl", 1, "x"), ("a.jsonl", 9, "y"), ("a.jsonl", 2, "z")])
    assert survivor == ("a.jsonl", 2, "z")
    assert [(d.path, d.line, d.duplicate_of) for d in decisions] == [("a.jsonl", 9, "z"), ("b.jsonl", 1, "z")]


def test_clusters_merge_transitively_and_keep_the_earliest():
    a, b, c, d = ("f", 1, "a"), ("f", 2, "b"), ("f", 3, "c"), ("g", 1, "d")
    out = near_duplicate_decisions([(b, c, 0.8), (a, b, 0.9), (d, c, 0.7)])
    assert sorted((x.line, x.path, x.duplicate_of) for x in out) == [(1, "g", "a"), (2, "f", "a"), (3, "f", "a")]


def test_dedup_in_memory_end_to_end():
    cfg = DedupConfig(bands=20, rows=5, threshold=0.6)
    base = " ".join(f"word{i}" for i in range(300))
    near = base.replace("word150", "changed")
    texts = [("f", 1, base), ("f", 2, near), ("f", 3, base), ("f", 4, "something else entirely " * 20)]
    hasher = MinHasher(100, cfg.seed)
    rows = [{"path": p, "line": ln, "id": f"id{ln}", "text_hash": text_hash(t),
             "minhash": hasher.signature(shingle_hashes(t, 5)).tolist()} for p, ln, t in texts]
    got = {(d["line"], d["reason"], d["duplicate_of"]) for d in dedup_in_memory(rows, cfg)}
    assert got == {(2, "near_duplicate", "id1"), (3, "exact_duplicate", "id1")}


