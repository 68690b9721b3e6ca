"""Write ``web.yaml``, the per-language thresholds of the ``web`` quality profile.

    python -m pipelines.corpus.thresholds.build --fineweb2 PATH/TO/fineweb-2 [--check]

``PATH/TO/fineweb-2`` is a checkout of https://github.com/huggingface/fineweb-2 (Apache-2.0);
its ``configs/{iso639-3}_{script}.yml`` hold FineWeb-2's per-language filter settings. For each
of our languages with such a file (:data:`FINEWEB2_CONFIG`) the table takes these numbers and
word lists (facts, not code):

* every script: ``dup_line_frac`` (Gopher repetition), ``line_punct_thr`` and ``new_line_ratio``
  (FineWeb quality), ``max_non_alpha_words_ratio`` (Gopher quality);
* scripts written with spaces: also ``top_n_grams``, ``dup_n_grams``, ``min_avg_word_length``,
  ``max_avg_word_length`` and ``stopwords`` (as ``stop_words``);
* scripts without spaces (our tokens there are grapheme clusters, not FineWeb-2's dictionary
  words, so word lengths and n-gram fractions do not compare): only the stop words that are one
  grapheme cluster, with ``min_stop_words: 2`` when at least 5 remain (Chinese, Japanese).

Not taken: ``language_score`` (a floor on GlotLID's probability; our default identifier is
FT176, whose scores are on another scale) and FineWeb-2's global choices (paragraph rules off,
``char_duplicates_ratio`` 0.1, short-line rule off), which are not per language.

:data:`OURS` holds hand-set settings (English: FineWeb-2 has no file; its thresholds are
FineWeb's English defaults, the profile's own). Two settings are ours for every language,
calibrated on the parallel UDHR text of the bundled corpus (``data/corpus/raw``: the same 31
units, preamble and articles 1-30, in all 75 languages) by :func:`calibrate`:

* ``doc_words_scale``: the median, over the units, of the unit's word count in the language
  divided by the English unit's (graphemes / (2 x English words) for scripts without spaces,
  whose profile-wide minimum already assumes ~2 graphemes per word). Gopher's ``min_doc_words``
  and ``max_doc_words`` are multiplied by it, so every language needs about as much text as
  English does: Finnish or Korean say in 12 words what English says in 20.
* the stop-word list: FineWeb-2's list when the units that pass the length rule fail the
  stop-word rule (< ``min_stop_words`` distinct stop words) at most 10 % of the time, else
  spaCy's list of the language on the same test, else ``min_stop_words: null`` (rule off).
  FineWeb-2's lists are the most frequent words of its web text under its own word tokenizers;
  where those split particles or suffixes (Korean, Dravidian and Georgian case endings) our
  Unicode-word tokens rarely equal them.

The calibration is in-sample for the UDHR part of the benchmark (``benchmarks/corpus_thresholds.py``):
its numbers are a check that the table does not starve a language, not an independent test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import statistics
from collections import defaultdict

import regex
import yaml
from datatrove.utils.text import PUNCTUATION_SET

from pipelines.corpus.langs import MGTE_LANGS, NO_SPACE_LANGS

ROOT = Path(__file__).resolve().parents[3]
RAW = ROOT / "data" / "corpus" / "raw"
TRUTH = ROOT / "data" / "corpus" / "truth.jsonl"
MIN_DOC_WORDS = 20  # the length minimum the stop-word test applies (dags/configs/corpus/tiny.yaml)
MIN_STOP_WORDS = 2
MAX_STOP_FAIL = 0.10

OUT = Path(__file__).with_name("web.yaml")

FINEWEB2_CONFIG: dict[str, str] = {
    "af": "afr_Latn", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl", "bg": "bul_Cyrl", "bn": "ben_Beng",
    "ca": "cat_Latn", "ceb": "ceb_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "es": "spa_Latn", "et": "ekk_Latn", "eu": "eus_Latn", "fa": "fas_Arab", "fi": "fin_Latn",
    "fr": "fra_Latn", "gl": "glg_Latn", "gu": "guj_Gujr", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "ht": "hat_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "is": "isl_Latn", "it": "ita_Latn",
    "ja": "jpn_Jpan", "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda",
    "ko": "kor_Hang", "ky": "kir_Cyrl", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn", "mk": "mkd_Cyrl",
    "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn", "my": "mya_Mymr", "ne": "npi_Deva",
    "nl": "nld_Latn", "no": "nob_Latn", "pa": "pan_Guru", "pl": "pol_Latn", "pt": "por_Latn", "qu": "quy_Latn",
    "ro": "ron_Latn", "ru": "rus_Cyrl", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "so": "som_Latn",
    "sq": "als_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "th": "tha_Thai", "tl": "fil_Latn", "tr": "tur_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "vi": "vie_Latn",
    "yo": "yor_Latn", "zh": "cmn_Hani",
}

# our settings, applied after FineWeb-2's: {lang: ({key: value}, why)}
OURS: dict[str, tuple[dict, str]] = {
    "en": ({}, "FineWeb-2 has no English file (English is FineWeb's): the profile-wide thresholds"),
    # Gopher's alpha ratio counts each punctuation token as a non-alpha word; Quechua says in few
    # long words what others say in many, so its UDHR units sit at 0.63-0.70 against FineWeb-2's 0.712
    "qu": ({"max_non_alpha_words_ratio": 0.6},
           "alpha-word ratio 0.6 (FineWeb-2's 0.712 drops most UDHR units: punctuation among few long words)"),
}

_ALL_SCRIPTS = ("dup_line_frac", "line_punct_thr", "new_line_ratio", "max_non_alpha_words_ratio")
_SPACED = ("top_n_grams", "dup_n_grams", "min_avg_word_length", "max_avg_word_length")
_GRAPHEME = regex.compile(r"\X")


def _git_head(repo: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def entry_from_fineweb2(lang: str, fw: dict) -> dict:
    keys = _ALL_SCRIPTS if lang in NO_SPACE_LANGS else _ALL_SCRIPTS + _SPACED
    out = {k: fw[k] for k in keys if k in fw}
    stops = [w for w in fw.get("stopwords") or [] if w.strip()]
    if lang in NO_SPACE_LANGS:  # one Han or kana character is a word; a Thai/Khmer/Lao/Burmese grapheme is not
        stops = [w for w in stops if len(_GRAPHEME.findall(w)) == 1] if lang in ("zh", "ja") else []
        if len(stops) >= 5:
            out["min_stop_words"] = 2
        else:
            stops = []
    if stops:
        out["stop_words"] = stops
    return out


def udhr_units() -> dict[str, dict[str, str]]:
    """{lang: {unit: NFC text}} of the bundled UDHR originals."""
    import json

    from pipelines.corpus.normalize import normalize_with_changes
    from pipelines.readers import read_records

    truth = {}
    for line in TRUTH.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        if t["source"] == "udhr" and t["kind"] == "original" and t["expected_lang"]:
            truth[(t["file"], t["line"] if t["line"] is not None else t["row"])] = t
    units: dict[str, dict[str, str]] = defaultdict(dict)
    for path in sorted(RAW.iterdir()):
        for item in read_records(str(path), text_field="text", max_record_bytes=8_000_000, on_schema_error="quarantine"):
            t = truth.get((path.name, getattr(item, "line", None)))
            if t is not None and isinstance(item.data.get("text"), str):
                units[t["expected_lang"]][t["id"].rsplit("-", 1)[1]] = normalize_with_changes(item.data["text"], "NFC")[0]
    return units


def _words(text: str) -> list[str]:
    from pipelines.corpus.quality import TOKENIZER

    return [w for w in TOKENIZER.word_tokenize(text) if any(c not in PUNCTUATION_SET for c in w)]


def _stop_fail_rate(texts: list[str], stops) -> float:
    stops = frozenset(stops)
    return sum(len(stops.intersection(_words(t))) < MIN_STOP_WORDS for t in texts) / max(1, len(texts))


def calibrate(table: dict, units: dict[str, dict[str, str]]) -> None:
    """Add ``doc_words_scale`` and choose the stop-word list of every language (module doc)."""
    from pipelines.corpus.quality import stop_words as spacy_stop_words

    english = {u: len(_words(t)) for u, t in units["en"].items()}
    for lang, entry in table.items():
        if lang not in units or lang == "en":
            continue
        no_space = lang in NO_SPACE_LANGS
        ratios = [len(_words(t)) / (english[u] * (2 if no_space else 1)) for u, t in units[lang].items()
                  if english.get(u)]
        scale = round(statistics.median(ratios), 2)
        entry["doc_words_scale"] = scale
        min_words = MIN_DOC_WORDS * scale * (2 if no_space else 1)
        texts = [t for t in units[lang].values() if len(_words(t)) >= min_words]
        if no_space and "stop_words" not in entry:
            continue  # the profile's no-space settings have no stop-word rule
        candidates = [("fineweb-2", entry.get("stop_words")), ("spacy", spacy_stop_words(lang))]
        chosen = None
        for name, stops in candidates:
            if stops and _stop_fail_rate(texts, stops) <= MAX_STOP_FAIL:
                chosen = name
                break
        fails = ", ".join(f"{n} {_stop_fail_rate(texts, s):.0%}" for n, s in candidates if s)
        if chosen == "spacy":
            entry.pop("stop_words", None)
            entry["stop_words_note"] = f"spaCy's list (UDHR units failing the rule: {fails})"
        elif chosen is None:
            entry.pop("stop_words", None)
            entry["min_stop_words"] = None
            entry["stop_words_note"] = f"rule off (UDHR units failing the rule: {fails or 'no list'})"


def build_table(fineweb2: Path) -> tuple[dict, str]:
    table = {}
    for lang in MGTE_LANGS:
        entry = {}
        name = FINEWEB2_CONFIG.get(lang)
        if name is not None:
            path = fineweb2 / "configs" / f"{name}.yml"
            fw = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(fw, dict):
                raise SystemExit(f"{path}: expected a mapping")
            entry = {"source": f"fineweb-2 configs/{name}.yml", **entry_from_fineweb2(lang, fw)}
        if lang in OURS:
            changes, why = OURS[lang]
            entry.update(changes)
            entry["source"] = f"{entry['source']} + ours: {why}" if name else f"ours: {why}"
        table[lang] = entry
    calibrate(table, udhr_units())
    for entry in table.values():  # the note joins the source line (one string key per entry)
        note = entry.pop("stop_words_note", None)
        if note:
            entry["source"] += f"; stop words: {note}"
    return table, _git_head(fineweb2)


HEADER = """\
# Per-language thresholds of the `web` quality profile (pipelines/corpus/config.py, QualityConfig.thresholds).
# Written by `python -m pipelines.corpus.thresholds.build --fineweb2 <checkout>`; do not edit by hand.
#
# Source: FineWeb-2 (https://github.com/huggingface/fineweb-2, commit {commit}),
# configs/{{iso639-3}}_{{script}}.yml, Apache-2.0; numbers and stop-word lists only (see build.py for
# which keys are taken for which scripts). `source` names the file of each language; "ours" marks
# our own settings and why. `doc_words_scale` and the choice of stop-word list are ours for every
# language, calibrated on the bundled parallel UDHR text (build.py, calibrate()). A key that is
# absent takes the profile-wide value (quality.gopher_quality, gopher_repetition, fineweb; their
# *_no_space variants for zh ja th km lo my); stop words absent -> spaCy's list of the language.
"""


def render(table: dict, commit: str) -> str:
    body = yaml.safe_dump({"languages": table}, allow_unicode=True, sort_keys=False, default_flow_style=None,
                          width=120)
    return HEADER.format(commit=commit) + body


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fineweb2", required=True, type=Path, help="a checkout of huggingface/fineweb-2")
    ap.add_argument("--check", action="store_true", help="compare with the committed table instead of writing")
    args = ap.parse_args()
    text = render(*build_table(args.fineweb2))
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT}: differs from what the build writes")
        print(f"{OUT}: up to date")
        return
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
