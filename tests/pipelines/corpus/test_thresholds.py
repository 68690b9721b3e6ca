"""Per-language thresholds of the `web` profile (issue 26): the table, its choice by the identified
language, `--set quality.thresholds.<lang>.<key>` overrides, and the stage using them."""

import json

import pyarrow.parquet as pq
import pytest
import yaml

from foundation.config import load_config
from foundation.errors import ConfigError
from pipelines.corpus import Config, run
from pipelines.corpus.config import THRESHOLD_KEYS, GopherQuality, QualityConfig
from pipelines.corpus.langs import MGTE_LANGS
from pipelines.corpus.quality import TOKENIZER, QualityFilters
from pipelines.corpus.thresholds import TABLE, default_table

from .conftest import RAW, TINY

UDHR = {r["id"]: r["text"] for r in map(json.loads, (RAW / "01-udhr-a.jsonl").read_text(encoding="utf-8").splitlines())}


def af_low_alpha() -> str:
    """A real Afrikaans UDHR article plus a line of years: alpha-word ratio ~0.755, between
    FineWeb-2's Afrikaans floor (0.707) and the profile-wide 0.8."""
    text = UDHR["udhr-afr-a26"]
    words = TOKENIZER.word_tokenize(text)
    alpha = sum(any(c.isalpha() for c in w) for w in words)
    years = int(alpha / 0.76) - len(words)
    return text + "\n" + " ".join(str(1900 + i) for i in range(years)) + "."


def test_table_covers_the_75_languages_with_fineweb2_values_named():
    table = default_table()
    assert set(table) == set(MGTE_LANGS)
    raw = yaml.safe_load(TABLE.read_text(encoding="utf-8"))["languages"]
    assert "huggingface/fineweb-2" in TABLE.read_text(encoding="utf-8")[:600]
    for lang, entry in raw.items():
        assert set(entry) <= set(THRESHOLD_KEYS), (lang, set(entry) - set(THRESHOLD_KEYS))
        assert entry["source"].startswith("fineweb-2 configs/" if lang != "en" else "ours"), (lang, entry["source"])
        assert lang == "en" or 0.3 < entry["doc_words_scale"] < 3, lang
    # FineWeb-2's published values (configs/fra_Latn.yml, commit d0defb2), carried over as they are
    fr = table["fr"]
    assert (fr["dup_line_frac"], fr["line_punct_thr"], fr["new_line_ratio"], fr["max_non_alpha_words_ratio"]) == (
        0.264, 0.1, 0.185, 0.812)
    assert fr["top_n_grams"] == ((2, 0.161), (3, 0.149), (4, 0.134)) and fr["stop_words"][:4] == ("de", "la", "le", "et")
    assert table["th"]["line_punct_thr"] == 0.0 and "top_n_grams" not in table["th"]  # graphemes, not words


def test_thresholds_are_chosen_by_the_language():
    text = af_low_alpha()
    with_table = QualityFilters(QualityConfig())
    assert with_table.score(text, "af")[0] is None  # FineWeb-2's Afrikaans floor 0.707
    reason, scores = with_table.score(text, "en")  # English has no such entry: the profile's 0.8
    assert (reason, scores["threshold"]) == ("gopher_below_alpha_threshold", 0.8)
    reason, scores = QualityFilters(QualityConfig(thresholds={})).score(text, "af")
    assert (reason, scores["threshold"]) == ("gopher_below_alpha_threshold", 0.8)


def test_doc_words_scale_and_stop_words_follow_the_language():
    short_fi = UDHR["udhr-fin-a04"]  # 14 words: Finnish says in 14 what English says in ~20
    base = QualityConfig(gopher_quality=GopherQuality(min_doc_words=20))
    assert base.gopher_quality_for("fi").min_doc_words == round(20 * default_table()["fi"]["doc_words_scale"]) < 20
    assert QualityFilters(base).score(short_fi, "fi")[0] is None
    reason, scores = QualityFilters(QualityConfig(gopher_quality=GopherQuality(min_doc_words=20),
                                                  thresholds={})).score(short_fi, "fi")
    assert (reason, scores["threshold"]) == ("gopher_short_doc", 20)
    f = QualityFilters(QualityConfig())
    assert f.stop_words_for("fr") == frozenset(default_table()["fr"]["stop_words"])  # FineWeb-2's list
    assert "the" in f.stop_words_for("en") and "der" in f.stop_words_for("de")  # spaCy's where the table has none
    assert QualityConfig().gopher_quality_for("ko").min_stop_words is None  # calibrated off (module doc of build.py)


def test_set_overrides_one_key_of_one_language(tmp_path):
    cfg = load_config(Config, TINY, ["quality.thresholds.af.max_non_alpha_words_ratio=0.8",
                                     "quality.thresholds.fr.stop_words=[le, la]"])
    q = cfg.quality
    assert q.gopher_quality_for("af").max_non_alpha_words_ratio == 0.8
    assert q.thresholds["af"]["dup_line_frac"] == default_table()["af"]["dup_line_frac"]  # the rest stays
    assert q.stop_words_for("fr") == ("le", "la")
    reason, scores = QualityFilters(q).score(af_low_alpha(), "af")
    assert (reason, scores["threshold"]) == ("gopher_below_alpha_threshold", 0.8)
    assert hash(q) != hash(load_config(Config, TINY).quality)
    assert load_config(Config, TINY, ["quality.thresholds={}"]).quality.thresholds == {}


@pytest.mark.parametrize("item,message", [
    ("quality.thresholds.xx.line_punct_thr=0.1", "unknown language 'xx'"),
    ("quality.thresholds.fr.line_punct=0.1", "quality.thresholds.fr: unknown key 'line_punct'"),
    ("quality.thresholds.fr.line_punct_thr=abc", "quality.thresholds.fr.line_punct_thr"),
    ("quality.thresholds.fr.doc_words_scale=0", "quality.thresholds.fr.doc_words_scale"),
    ("quality.thresholds.fr.stop_words=le", "quality.thresholds.fr.stop_words"),
])
def test_bad_overrides_are_refused_in_one_line(item, message):
    with pytest.raises(ConfigError) as exc:
        load_config(Config, TINY, [item])
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_stage_applies_the_identified_languages_thresholds(tmp_path):
    """Language ID runs before the filters: the stage reads the Afrikaans text as `af` and keeps it
    with the Afrikaans floor, drops it with the profile-wide one (recorded beside its threshold)."""
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "af.jsonl").write_text(json.dumps({"id": "af-1", "text": af_low_alpha()}, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    outs = {}
    for name, sets in {"table": [], "none": ["quality.thresholds={}"]}.items():
        out = tmp_path / name
        run(load_config(Config, TINY, [f"input=['{inp}']", f"output={out}", "engine=local", "progress=false",
                                       "dedup.near=false", *sets]))
        outs[name] = out
    kept = pq.read_table(outs["table"] / "data", columns=["id", "lang"]).to_pylist()
    assert kept == [{"id": "af-1", "lang": "af"}]
    dropped = pq.read_table(outs["none"] / "dropped", columns=["reason", "lang", "scores"]).to_pylist()
    assert [(d["reason"], d["lang"], json.loads(d["scores"])["threshold"]) for d in dropped] == [
        ("gopher_below_alpha_threshold", "af", 0.8)]


def test_build_takes_fineweb2_keys_by_script():
    """build.py's rules on a FineWeb-2-shaped config: word-level keys only for spaced scripts,
    one-character stop words only for Chinese/Japanese, never the GlotLID `language_score`."""
    from pipelines.corpus.thresholds.build import entry_from_fineweb2

    fw = {"dup_line_frac": 0.3, "dup_n_grams": [[5, 0.2]], "language_score": 0.9, "line_punct_thr": 0.05,
          "max_avg_word_length": 9, "min_avg_word_length": 2, "max_non_alpha_words_ratio": 0.7,
          "new_line_ratio": 0.2, "top_n_grams": [[2, 0.3]], "stopwords": ["的", "在", "是", "和", "了", "我们", "ภาษา"]}
    spaced = entry_from_fineweb2("fr", fw)
    assert spaced == {"dup_line_frac": 0.3, "line_punct_thr": 0.05, "new_line_ratio": 0.2,
                      "max_non_alpha_words_ratio": 0.7, "top_n_grams": [[2, 0.3]], "dup_n_grams": [[5, 0.2]],
                      "min_avg_word_length": 2, "max_avg_word_length": 9, "stop_words": fw["stopwords"]}
    zh = entry_from_fineweb2("zh", fw)
    assert zh["stop_words"] == ["的", "在", "是", "和", "了"] and zh["min_stop_words"] == 2
    assert not {"top_n_grams", "dup_n_grams", "min_avg_word_length", "language_score"} & set(zh)
    th = entry_from_fineweb2("th", fw)  # a Thai grapheme is not a word: no stop words
    assert "stop_words" not in th and "min_stop_words" not in th and th["dup_line_frac"] == 0.3
