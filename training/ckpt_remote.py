"""Checkpoints at an fsspec URL (``s3://``, ``gs://``, ``file://`` ...): the storage every node of a
cluster reaches, holding the one copy of each checkpoint.

Object stores have no atomic directory rename, so the commit point is the manifest: a checkpoint
is staged on local disk by :func:`training.checkpoint.save_checkpoint`, its files are uploaded to
``URL/step-N/`` and ``manifest.json`` goes last. A step directory without a manifest (a save
killed mid-upload) never verifies. Reading fetches a step into a per-node cache directory and
verifies every sha256 there, so each rank (on any node) loads exactly what rank 0 verified.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from pathlib import Path

from foundation.errors import MgteError

MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class RemoteCheckpointError(MgteError):
    """A checkpoint URL that cannot be read or written; names the URL."""


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def is_url(location) -> bool:
    return isinstance(location, str) and "://" in location


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def _fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol or its package missing (s3fs, gcsfs)
        raise RemoteCheckpointError(f"checkpoint storage {url}: {exc}") from None


def list_steps(url: str) -> list[tuple[int, str]]:
    """``(step, URL/step-N)`` of every step directory, newest first."""
    fs, root = _fs(url)
    try:
        entries = fs.ls(root, detail=True)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        m = _STEP_DIR.match(name)
        if m and entry.get("type") == "directory":
            found.append((int(m.group(1)), join(url, name)))
    return sorted(found, reverse=True)


def upload(local_step: Path, url_step: str) -> None:
    """Copy a finished local step directory to ``url_step``: every file, the manifest last."""
    fs, root = _fs(url_step)
    try:
        if fs.exists(root):  # the same step saved again
            fs.rm(root, recursive=True)
        files = sorted(p for p in local_step.rglob("*") if p.is_file() and p.name != MANIFEST)
        for path in [*files, local_step / MANIFEST]:
            rel = path.relative_to(local_step).as_posix()
            fs.makedirs(root + "/" + rel.rsplit("/", 1)[0] if "/" in rel else root, exist_ok=True)
            fs.put_file(str(path), root + "/" + rel)
    except OSError as exc:
        raise RemoteCheckpointError(f"cannot upload checkpoint to {url_step}: {exc}") from exc


def fetch(url_step: str) -> Path:
    """A local copy of ``url_step`` in this node's cache (a file already there that matches the
    manifest's sha256 is kept); verifying it is the caller's job. No manifest -> a directory that
    never verifies."""
    import json

    fs, root = _fs(url_step)
    local = Path(tempfile.gettempdir()) / "mgte-checkpoints" / hashlib.sha1(url_step.encode()).hexdigest()[:20]
    local.mkdir(parents=True, exist_ok=True)
    (local / MANIFEST).unlink(missing_ok=True)
    try:
        if not fs.exists(root + "/" + MANIFEST):
            return local  # verify_checkpoint names it: the save did not finish
        fs.get_file(root + "/" + MANIFEST, str(local / (MANIFEST + ".part")))
        manifest = json.loads((local / (MANIFEST + ".part")).read_text())
        for rel, meta in sorted(manifest.get("files", {}).items()):
            target = local / rel
            if target.is_file() and target.stat().st_size == meta.get("bytes") and \
                    sha256_file(target) == meta.get("sha256"):
                continue  # this node fetched it before
            target.parent.mkdir(parents=True, exist_ok=True)
            if fs.exists(root + "/" + rel):
                fs.get_file(root + "/" + rel, str(target))
        (local / (MANIFEST + ".part")).replace(local / MANIFEST)
    except (OSError, ValueError) as exc:
        raise RemoteCheckpointError(f"cannot read checkpoint {url_step}: {exc}") from exc
    return local


def remove(url_step: str) -> None:
    fs, root = _fs(url_step)
    try:
        fs.rm(root, recursive=True)
    except FileNotFoundError:
        pass


def has_any(url: str) -> bool:
    fs, root = _fs(url)
    try:
        return bool(fs.ls(root))
    except FileNotFoundError:
        return False


def move_aside(url: str, suffix: str) -> str:
    """``URL`` -> ``URL<suffix><time>`` (kept as evidence); the new URL."""
    fs, root = _fs(url)
    target = url.rstrip("/") + suffix + time.strftime("%Y%m%d-%H%M%S")
    _, target_root = _fs(target)
    try:
        fs.mv(root, target_root, recursive=True)
    except OSError as exc:
        raise RemoteCheckpointError(f"cannot move {url} aside to {target}: {exc}") from exc
    return target


def staging_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="mgte-ckpt-stage-"))


def drop_staging(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
