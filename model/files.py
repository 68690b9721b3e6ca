"""The files of a model directory: their checksums, and the checks a load runs on them.

Every model directory mgte writes goes through :func:`model.hf.write_model_dir`, which ends with
:func:`write_checksums`: ``checksums.json`` = ``{"sha256": {relative path: hex}, "size": {path: bytes}}``
over every other file but the model card ``README.md``, written last (its ``.tmp`` renamed). A load of such a directory runs
:func:`verify_checksums` first (sizes, then sha256; the first file that differs is named), once per
process and unchanged files; a directory without ``checksums.json`` (a third-party Hugging Face or
sentence-transformers directory) is loaded as before.

:func:`read_config` reads ``config.json`` and names it when it is cut or not JSON;
:func:`damaged_file` names the cut JSON or safetensors file behind a load that failed;
:func:`decoder_architecture` tells a decoder-only (causal LM) model from an encoder.
Errors are :class:`ModelFileError` (a ``ValueError``) with one line naming the file; the stages
turn them into :class:`foundation.errors.ModelLoadError` (exit 2).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

CHECKSUMS = "checksums.json"
CARD = "README.md"  # the model card (model/card.py): documentation, updated after evaluation, not checked
_BLOCK = 1 << 22
_VERIFIED: set[tuple] = set()  # (directory, stat of its listed files) already verified in this process


class ModelFileError(ValueError):
    """A model file that is missing, cut, unreadable or not the one written; the message names it."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name != CHECKSUMS and not p.name.endswith(".tmp")
                  and str(p.relative_to(directory)) != CARD)


def write_checksums(directory: str | os.PathLike) -> Path:
    """``directory/checksums.json`` over every other file in it; call it last, when the files are final."""
    directory = Path(directory)
    files = _files(directory)
    doc = {"sha256": {rel: file_sha256(directory / rel) for rel in files},
           "size": {rel: (directory / rel).stat().st_size for rel in files}}
    tmp = directory / (CHECKSUMS + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, directory / CHECKSUMS)
    return directory / CHECKSUMS


def verify_checksums(directory: str | os.PathLike) -> bool:
    """Check every file ``checksums.json`` lists (False: the directory has none, nothing checked).
    Raises :class:`ModelFileError` naming the first file that is missing or differs."""
    directory = Path(directory)
    listing = directory / CHECKSUMS
    if not listing.is_file():
        return False
    try:
        doc = json.loads(listing.read_text())
        sums, sizes = dict(doc["sha256"]), dict(doc.get("size", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{listing}: unreadable checksum file ({type(exc).__name__}: {exc})") from None
    stats = []
    for rel in sorted(sums):
        try:
            st = (directory / rel).stat()
        except OSError:
            raise ModelFileError(f"{directory / rel}: missing (listed in {CHECKSUMS})") from None
        if rel in sizes and st.st_size != sizes[rel]:
            raise ModelFileError(f"{directory / rel}: {st.st_size} bytes, {sizes[rel]} when written (cut or "
                                 f"changed; {CHECKSUMS})")
        stats.append((rel, st.st_size, st.st_mtime_ns))
    key = (str(directory.resolve()), listing.stat().st_mtime_ns, tuple(stats))
    if key in _VERIFIED:
        return True
    for rel, expected in sorted(sums.items()):
        if file_sha256(directory / rel) != expected:
            raise ModelFileError(f"{directory / rel}: sha256 differs from {CHECKSUMS} (the file changed after it "
                                 "was written); restore the model, or set verify_model: false to load it anyway")
    _VERIFIED.add(key)
    return True


def read_config(directory: str | os.PathLike) -> dict:
    """``directory/config.json`` as a dict, or a ModelFileError naming it (missing, cut, not an object)."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: not found; not a model directory") from None
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable or cut ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: not a JSON object")
    return config


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (header cut, data shorter than the header says), else None."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, no header"
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            return f"header of {n} bytes in a file of {size}"
        try:
            header = json.loads(fh.read(n))
        except ValueError as exc:
            return f"header is not JSON ({exc})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"{size} bytes, the header says {8 + n + end} (truncated?)"
    return None


def damaged_file(directory: str | os.PathLike) -> str | None:
    """``"<path>: <why>"`` for the first JSON or safetensors file of the directory that is cut or
    malformed (what a failed load is told by), else None."""
    directory = Path(directory)
    for rel in _files(directory):
        path = directory / rel
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".safetensors" and (why := _safetensors_problem(path)):
                return f"{path}: unreadable safetensors file ({why})"
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            return f"{path}: unreadable or cut ({type(exc).__name__}: {exc})"
    return None


def decoder_architecture(config: dict) -> str | None:
    """The architecture of a decoder-only model (``config.json`` with ``is_decoder``, a causal-LM
    architecture, or a model type that transformers knows only as a causal LM), else None."""
    archs = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type") or "")
    name = f"{', '.join(archs) or 'no architectures'} (model_type {model_type or '?'})"
    if config.get("is_decoder"):
        return f"{name}, is_decoder: true"
    if model_type in ("mgte", "new"):
        return None
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                         MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:  # BERT, XLM-R, ...: encoders that also have an LM head
        return None
    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or any(
            a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return name
    return None
