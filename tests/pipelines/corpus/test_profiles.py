"""Quality profiles (`web`, `curated`, per source) on the bundled documentation sample
(data/corpus/docs, truth in data/corpus/docs_truth.jsonl), and the curated rules one by one."""

import json

import pyarrow.parquet as pq
import pytest

from foundation.config import load_config
from pipelines.corpus import Config, run
from pipelines.corpus.config import QualityConfig
from pipelines.corpus.quality import QualityFilters

from .conftest import ROOT, TINY, outcome

DOCS = ROOT / "data" / "corpus" / "docs"
DOCS_TRUTH = ROOT / "data" / "corpus" / "docs_truth.jsonl"


def docs_config(output, *sets):
    return load_config(Config, TINY, [f"output={output}", f"input=['{DOCS}']", "engine=local", *sets])


def docs_truth() -> list[dict]:
    return [json.loads(line) for line in DOCS_TRUTH.read_text().splitlines()]


def score(out_dir) -> dict:
    """The issue's measures of one run against the sample's truth."""
    got, truth = outcome(out_dir), docs_truth()
    fate = {(t["file"], t["line"]): got[(t["file"], t["line"])] for t in truth}
    of = lambda kind: [fate[(t["file"], t["line"])] for t in truth if t["kind"] == kind]  # noqa: E731
    originals, junk = of("original"), of("junk")
    near = of("near_duplicate")
    lid = [(t["expected_lang"], fate[(t["file"], t["line"])][1]) for t in truth
           if t["expected_lang"] and t["kind"] != "malformed"]
    return {"clean_kept": sum(f[0] == "kept" for f in originals) / len(originals),
            "junk_removed": sum(f[0] != "kept" for f in junk) / len(junk),
            "exact_kept": sum(f[0] == "kept" for f in of("exact_duplicate")),
            "near_removed": sum(f[0] != "kept" for f in near) / len(near),
            "originals_as_dup": sum(str(f[2]).endswith("_duplicate") for f in originals) / len(originals),
            "lid_accuracy": sum(a == b for a, b in lid) / len(lid),
            "malformed_quarantined": all(f[0] == "quarantined" for f in of("malformed"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("profiles")
    return {name: (base / name, run(docs_config(base / name, *sets))) for name, sets in {
        "web": [], "curated": ["quality.profile=curated"],
        "by_source": ["quality.source_profiles={coreutils: curated}"]}.items()}


def test_docs_sample_is_small_real_and_multilingual():
    truth = docs_truth()
    assert sum(p.stat().st_size for p in DOCS.iterdir()) < 1_000_000
    langs = {t["expected_lang"] for t in truth if t["kind"] == "original"}
    assert len(langs) >= 20 and {"en", "de", "ja", "zh", "ru"} <= langs
    assert 150 <= sum(t["kind"] == "original" for t in truth) <= 400
    assert {t["kind"] for t in truth} == {"original", "exact_duplicate", "near_duplicate", "junk", "malformed"}


def test_curated_meets_the_targets_and_web_does_not(runs):
    curated, web = score(runs["curated"][0]), score(runs["web"][0])
    assert curated["clean_kept"] >= 0.7 and curated["junk_removed"] >= 0.95, curated
    assert web["clean_kept"] < 0.3, web  # web heuristics read option tables as junk (the finding)
    for s in (curated, web):
        assert s["exact_kept"] == 0 and s["near_removed"] >= 0.9 and s["originals_as_dup"] < 0.05, s
        assert s["lid_accuracy"] >= 0.95 and s["malformed_quarantined"], s
    for _, manifest in runs.values():
        c = manifest["counts"]
        assert c["input"] == c["kept"] + c["dropped"] + c["quarantined"]


def test_pages_with_no_body_are_dropped_as_such(runs):
    """The sample's pages that are only a man page's running head and foot, or navigation and
    consent banners (issue 26), in 7 languages: none is kept, the head/foot pages by `no_body`."""
    got = outcome(runs["curated"][0])
    pages = [t for t in docs_truth() if t["junk_type"] == "no_body"]
    assert len(pages) >= 10
    fates = [got[(t["file"], t["line"])] for t in pages]
    assert all(f[0] != "kept" for f in fates), fates
    heads = [got[(t["file"], t["line"])] for t in pages if "running head" in t["note"]]
    assert sum(f[2] == "curated_no_body" for f in heads) >= len(heads) - 2, heads  # zh/ja heads may be too short


def test_source_profiles_pick_the_profile_per_record(runs):
    # every record of the sample has source `coreutils`: mapping it to curated is the curated run
    assert outcome(runs["by_source"][0]) == outcome(runs["curated"][0])
    assert runs["by_source"][1]["config_hash"] != runs["curated"][1]["config_hash"]


def test_dropped_rows_keep_the_failed_statistic_beside_its_threshold(runs):
    for name in ("web", "curated"):
        rows = pq.read_table(runs[name][0] / "dropped", columns=["reason", "scores"]).to_pylist()
        quality = [r for r in rows if r["reason"].startswith(("gopher", "c4_", "fineweb", "curated"))]
        assert quality
        for r in quality:
            s = json.loads(r["scores"])
            assert s["profile"] == name.replace("by_source", "curated")
            if s.get("value") is None:
                continue
            failed = s["value"] < s["threshold"] if s["bound"] == "min" else s["value"] > s["threshold"]
            assert failed, r  # the recomputed statistic really is on the wrong side of its threshold


OPTIONS_DOC = ("Usage: ls [OPTION]... [FILE]...\nList information about the FILEs (the current directory by default).\n"
               "  -a, --all                  do not ignore entries starting with .\n"
               "  -A, --almost-all           do not list implied . and ..\n"
               "      --block-size=SIZE      with -l, scale sizes by SIZE when printing them; e.g., '--block-size=M'\n"
               "  -d, --directory            list directories themselves, not their contents\n"
               "  -I, --ignore=PATTERN       do not list implied entries matching shell PATTERN\n"
               "Example: for f in /usr/share/doc/*; do ls -l \"$f\" | awk '{print $5}'; done")


@pytest.mark.parametrize("text,reason", [
    (OPTIONS_DOC, None),
    ("Next page", "curated_words"),
    ("Home | Downloads | Documentation | Mailing lists | Bug reports | Contact | Privacy policy",
     "curated_boilerplate_word_ratio"),
    ("\n".join(["Try 'ls --help' for more information about the options of this command."] * 12),
     "curated_rep_dup_line_frac"),
    (" ".join(["download coreutils free crack keygen full version"] * 20), "curated_rep_duplicated_10_n_grams"),
    ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.",
     "curated_lorem_ipsum"),
    (" ".join("".join("abcdef"[(i + k * k) % 6] for k in range(8)) for i in range(200)),  # a hex dump
     "curated_word_token_ratio"),
    (" ".join("".join("¶±™§©®°{}<>|~^@#$%&*+=_;:!?"[(i * 7 + k * k) % 27] for k in range(6)) for i in range(60))
     + " and a few words here and there to count as a sentence of text", "curated_letter_ratio"),
    ("the text \ufffd\ufffd of a damaged \ufffd\ufffd\ufffd file with many \ufffd replacement characters in it now",
     "curated_bad_char_ratio"),
    ("\n".join("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3ODkrLw" for _ in range(12)),
     "curated_mean_token_chars"),
    ('<div class="nav"><ul><li><a href="/">Home</a></li><li><a href="/manual/">Manual pages</a></li>'
     '<li><a href="/news/">News</a></li></ul></div><div id="footer"></div>', "curated_markup_char_ratio"),
])
def test_curated_rules(text, reason):  # noqa: D103 - the expected reason is the test
    filters = QualityFilters(QualityConfig())
    got, scores = filters.score(text, "en", profile="curated")
    assert got == reason, scores
    if reason is None:
        web_reason, web_scores = filters.score(text, "en", profile="web")
        assert web_reason is not None  # the option table fails a web heuristic
        assert {"statistic", "value", "threshold"} <= set(web_scores)


def test_unknown_source_profile_is_a_config_error(tmp_path):
    from foundation.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="source_profiles"):
        docs_config(tmp_path, "quality.source_profiles={coreutils: books}")


NOUNS = ("apple banana cherry dolphin eagle falcon garden harbor island jungle kettle lemon mountain nectar orange "
         "pepper quartz river saddle tomato umbrella violin walnut yellow zebra anchor basket candle desert engine "
         "forest guitar helmet insect jacket kitchen ladder magnet needle orchid pencil rocket silver tunnel valley "
         "window button castle dragon feather glacier hammer lantern marble noodle oyster parrot").split()


@pytest.mark.parametrize("text,reason,statistic,value,threshold", [
    (" ".join(NOUNS[:30]) + ".\n" + " ".join(NOUNS[30:]) + ".", "gopher_enough_stop_words", "stop_words", 0, 2),
    ("The " + " ".join(NOUNS[:30]) + " and the " + " ".join(NOUNS[30:]) + " {x}.", "c4_curly_bracket",
     "count_{", 1, 0),
    ("Too short to be a document, the committee said.", "gopher_short_doc", "words", 9, 50),
])
def test_web_reasons_carry_their_statistic(text, reason, statistic, value, threshold):
    got, scores = QualityFilters(QualityConfig()).score(text, "en")
    assert (got, scores["statistic"], scores["value"], scores["threshold"]) == (reason, statistic, value, threshold)
