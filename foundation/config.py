"""Typed, frozen, YAML-loaded configs.

Every stage declares its config as nested ``@dataclass(frozen=True, kw_only=True, slots=True)``
classes. :func:`load_config` builds one from a YAML file plus ``--set a.b=v`` overrides and
rejects what it does not know: an unknown key, a wrong type or a failed cross-field check is a
:class:`ConfigError` that names the key and the file. The resolved config and its hash go into
every manifest and checkpoint (:func:`config_to_dict`, :func:`config_hash`).

A YAML file may start from another with ``base: other.yaml`` (relative to the file) and change a
few fields: variants derive from a base.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from foundation.errors import ConfigError

T = TypeVar("T")

frozen = dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
"""The decorator every config class uses."""


class FrozenDict(dict):
    """A read-only, hashable, picklable mapping for dict-typed config fields."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((k, v) for k, v in self.items())))

    def _readonly(self, *args, **kwargs):
        raise TypeError("config mappings are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):  # {} replaces
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    """Read a config file, following ``base:`` chains (a list or one path)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    bases = data.pop("base", None)
    if bases is None:
        return data
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, read_yaml(path.parent / base))
    return _merge(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=v`` -> (["a", "b"], v); v is parsed as a YAML scalar/flow value."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: typing.Iterable[str]) -> dict:
    data = json.loads(json.dumps(data, default=str)) if data else {}
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[path[-1]] = value
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:  # `float | None`: the one type's own reason
            raise ConfigError(errors[0])
        raise ConfigError(f"{source}: key '{key}': {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{source}: key '{key}': {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, value, source=source, prefix=key)
    if origin in (list, tuple, collections.abc.Sequence):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key '{key}': expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: key '{key}': expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: key '{key}': expected a mapping, got {value!r}")
        args = get_args(tp)
        if not args:
            return FrozenDict(value)
        return FrozenDict(
            {_coerce(k, args[0], key, source): _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
        )
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-2` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: key '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):  # NaN passes every `x <= 0` check; inf trains, then fails late
            raise ConfigError(f"{source}: key '{key}': expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{source}: key '{key}': expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}': expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{source}: key '{key}': expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{source}: key '{key}': expected {_type_name(tp)}, got {value!r}")
    return value


def build(cls: type[T], data: dict, *, source: str = "<config>", prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping; unknown keys are errors."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{source}: unknown key '{where}{unknown[0]}'"
            f" (known keys{' under ' + prefix if prefix else ''}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            # a partial mapping changes only the keys it names: start from the field's default
            value = _merge(config_to_dict(default), value)
        kwargs[name] = _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name, source)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{source}: {prefix or cls.__name__}: {exc}") from None
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"{source}: {prefix or cls.__name__}: {exc}") from None
    return obj


def load_config(cls: type[T], path: str | Path | None = None, overrides: typing.Iterable[str] = (), *,
                data: dict | None = None) -> T:
    """YAML file (or ``data``) + ``--set`` overrides -> a frozen ``cls`` instance."""
    source = str(path) if path is not None else "<defaults>"
    raw = read_yaml(path) if path is not None else dict(data or {})
    overrides = list(overrides)
    if overrides:
        raw = apply_overrides(raw, overrides)
        source = f"{source} (with --set {' '.join(overrides)})"
    return build(cls, raw, source=source)


def replace(cfg: T, **changes: Any) -> T:
    return dataclasses.replace(cfg, **changes)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Any) -> dict:
    """The resolved config as plain JSON-able data."""
    return _plain(cfg)


def config_hash(cfg: Any, *, exclude: typing.Iterable[str] = ()) -> str:
    """Short sha256 of the resolved config (keys in ``exclude`` at the top level left out)."""
    data = config_to_dict(cfg) if not isinstance(cfg, dict) else dict(cfg)
    for key in exclude:
        data.pop(key, None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Pieces shared by every stage config.


@frozen
class RayConfig:
    """How a stage reaches Ray: ``address: null`` starts a local ``ray.init()``."""

    address: str | None = None
    num_cpus: int | None = None  # local Ray only
    max_retries: int = 2  # reruns of a task (or restarts of an actor) whose worker died; never infinite
    # local Ray only: the shared-memory object store, MB (null: Ray's default, 30 % of memory);
    # what does not fit spills to disk (under RAY_TMPDIR), so it bounds the memory the data takes
    object_store_mb: int | None = None

    def validate(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"ray.max_retries must be >= 0 (bounded), got {self.max_retries}")
        if self.object_store_mb is not None and self.object_store_mb < 64:
            raise ValueError(f"ray.object_store_mb must be >= 64 (or null), got {self.object_store_mb}")


@frozen
class LocalConfig:
    """The local engine: per-file tasks in this process (1) or in a pool of worker processes."""

    workers: int = 1

    def validate(self) -> None:
        if self.workers < 1:
            raise ValueError(f"local.workers must be >= 1, got {self.workers}")


@frozen
class BeamConfig:
    """Beam pipeline options, e.g. ``--runner=DirectRunner --direct_num_workers=2``."""

    options: str = "--runner=DirectRunner"


@frozen
class DataStageConfig:
    """The keys every data stage shares: where it reads and writes, and how it runs. Only
    ``input`` is part of the output's identity; the others are run-only (``ledger.RUN_ONLY_KEYS``).
    A stage's ``Config`` derives from it and adds its own sections."""

    input: tuple[str, ...] = ()
    output: str | None = None
    engine: Literal["beam", "ray", "local"] = "beam"  # where the tasks run (pipelines.engines)
    # a rerun over another input set: refuse naming the files, or redo exactly what changed
    on_input_change: Literal["refuse", "redo"] = "refuse"
    beam: BeamConfig = BeamConfig()
    ray: RayConfig = RayConfig()
    local: LocalConfig = LocalConfig()
    progress: bool = True  # a bar per phase on a terminal; false: log lines there too (foundation/progress.py)
