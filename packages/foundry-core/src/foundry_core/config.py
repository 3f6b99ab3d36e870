"""Run configuration: YAML files with ``include:``, dotted overrides, strict dataclass validation.

Resolution is pure: it reads the YAML file and its includes and nothing else; no process group is
started and nothing is downloaded. ``resolve_config(path, overrides)`` returns a plain dict;
``parse_dataclass(Config, dict, resolve=...)`` turns a mapping into a (nested) dataclass and rejects
unknown keys and wrong types with a message naming the dotted key and the closest valid choices.

A component node ``{name: ..., **fields}`` becomes a typed :class:`Node` here, once: the component's own
``Config`` instance plus its kind and name; the registry builds the component from that node without
parsing a mapping again. Which ``Config`` a name has is asked of the ``resolve(kind, name)`` callable the
caller passes (``Registry.config_class``): this module knows nothing of the registry or the plugins.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from foundry_core.errors import ConfigError, FoundryError, did_you_mean

T = TypeVar("T")
INCLUDE_KEY = "include"

#: ``resolve(kind, name)`` -> the component's ``Config`` dataclass, or None when it takes no fields;
#: raises a :class:`FoundryError` naming the closest known names when there is no such component.
Resolver = Callable[[str, str], "type | None"]


@dataclass(frozen=True)
class Node:
    """A validated component node: the component's (kind, name) and its typed ``Config`` (None: no fields).

    Built only by :func:`parse_node` / :func:`parse_dataclass`; ``to_dict(node)`` gives the YAML form back.
    """

    kind: str
    name: str
    config: Any = None


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` (no dot) as a float, as people write learning rates."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    """A mapping that names a repeated key (YAML silently keeps the last one otherwise)."""
    seen: dict[Any, int] = {}  # explicit keys only: they may override keys merged in with ``<<: *anchor``
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line)
        except TypeError:
            continue  # an unhashable key: SafeLoader reports it itself
        if first != key_node.start_mark.line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
            )
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_load(text: str) -> Any:
    """Parse YAML with Foundry's loader (safe; exponent floats)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def component(kind: str, default: Any = dataclasses.MISSING) -> Any:
    """Declare a dataclass field that holds component nodes of ``kind`` (the slot decides the kind).

    Annotate it ``Node``, ``Node | None``, ``list[Node]`` or ``dict[str, Node]``; :func:`parse_dataclass`
    turns each ``{name: ..., **fields}`` (or a bare ``name``) into a :class:`Node`, the default too.
    The owner builds it with ``registry.build(kind, node, ctx)``.
    """
    meta = {"component": kind}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------- YAML + include


def _load_yaml_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        return yaml_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"malformed YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML in {path}: {exc}") from None


def deep_merge(base: Any, over: Any) -> Any:
    """Merge ``over`` into ``base``: mappings merge key by key (later wins), anything else replaces."""
    if isinstance(base, Mapping) and isinstance(over, Mapping):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(over)


def load_config_file(path: str | os.PathLike[str], _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Load a YAML file, resolving ``include:`` (a path or list, relative to the including file)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise ConfigError(f"include cycle: {chain}")
    data = _load_yaml_file(path)
    if data is None:
        raise ConfigError(f"{path}: the file is empty (no YAML mapping); write the config into it")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    data = dict(data)
    includes = data.pop(INCLUDE_KEY, None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: 'include' must be a path or a list of paths, got {includes!r}")
    merged: dict[str, Any] = {}
    for inc in includes:
        inc_path = (path.parent / inc).resolve()
        if not inc_path.exists():
            raise ConfigError(f"{path}: included file not found: {inc} (looked at {inc_path})")
        merged = deep_merge(merged, load_config_file(inc_path, (*_stack, path)))
    return deep_merge(merged, data)


# --------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a","b","c"], value); the value is parsed as YAML (lists, null)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like dotted.key=value")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from None
    parts = key.split(".")
    if any(not p for p in parts):
        raise ConfigError(f"override {text!r}: empty key segment")
    return parts, value


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply dotted overrides; intermediate mappings are created, list items are addressed by index."""
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = cfg
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = node[_index(node, part, where)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i])} is not a mapping")
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            node = nxt
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, text)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"override {text!r}: {'.'.join(parts[:-1])} is not a mapping")
    return cfg


def _index(node: list, part: str, where: str) -> int:
    try:
        idx = int(part)
        node[idx]
    except (ValueError, IndexError):
        raise ConfigError(f"override {where!r}: {part!r} is not an index of a list of {len(node)}") from None
    return idx


def resolve_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``path`` (with includes) and apply ``overrides``; no other I/O, nothing started."""
    return apply_overrides(load_config_file(path), overrides)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=None)


def _plain(value: Any) -> Any:
    if isinstance(value, Node):
        cfg = value.config
        fields = [f for f in dataclasses.fields(cfg) if f.init] if cfg is not None else []
        return {"name": value.name, **{_yaml_key(f): _plain(getattr(cfg, f.name)) for f in fields}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_yaml_key(f): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_dict(value: Any) -> Any:
    """A dataclass (or nested structure of them) as plain dicts/lists, ready for YAML/JSON."""
    return _plain(value)


# --------------------------------------------------------------------------- validation


def parse_dataclass(
    cls: type[T], data: Any, *, where: str = "", resolve: Resolver | None = None, upgrade: bool = False
) -> T:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and wrong types raise ConfigError.

    ``resolve`` is needed only when ``cls`` (or a nested dataclass) has :func:`component` fields. A key
    in ``cls.RENAMED_KEYS`` (old -> new) fails naming the new key; ``upgrade=True`` (for configs Foundry
    wrote itself: exports, checkpoints) reads it under its new name instead.
    """
    label = where or cls.__name__
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    data = _renamed(cls, data, label, upgrade)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"{_join(label, key)}: unknown key{did_you_mean(str(key), fields)} (valid keys: {', '.join(fields)})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(label, name)
        kind = f.metadata.get("component")
        if name in data:
            value = data[name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required field is missing")
        elif _holds_nodes(hints[f.name]) or kind is not None:
            # a default that holds component nodes is written as plain YAML: make it typed too
            value = to_dict(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
        else:
            continue
        kwargs[f.name] = _coerce(hints[f.name], value, key, resolve, kind, upgrade)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{label}: {exc}") from None
    return obj


def parse_node(kind: str, value: Any, resolve: Resolver, where: str = "", *, upgrade: bool = False) -> Node:
    """Validate one component node ``{name: ..., **fields}`` (or a bare ``name``) into a :class:`Node`."""
    key = where or kind
    if isinstance(value, Node):
        if value.kind != kind:
            raise ConfigError(f"{key}: expected a {kind} node, got a {value.kind} node ({value.name!r})")
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping) or "name" not in value:
        raise ConfigError(f"{key}: expected a {kind} node like {{name: ..., <fields>}}, got {value!r}")
    name = str(value["name"])
    try:
        config_cls = resolve(kind, name)
    except FoundryError as exc:
        raise type(exc)(f"{key}: {exc}") from None
    fields = {k: v for k, v in value.items() if k != "name"}
    if config_cls is None:
        if fields:
            raise ConfigError(f"{key}: {name!r} takes no fields, got {sorted(fields)}")
        return Node(kind, name)
    return Node(kind, name, parse_dataclass(config_cls, fields, where=key, resolve=resolve, upgrade=upgrade))


def _renamed(cls: type, data: Mapping[str, Any], label: str, upgrade: bool) -> Mapping[str, Any]:
    """Old keys of ``cls.RENAMED_KEYS``: an error naming the new key, or (``upgrade``) the new key."""
    renamed: Mapping[str, str] = getattr(cls, "RENAMED_KEYS", {})
    old = [k for k in data if k in renamed]
    if not old:
        return data
    if not upgrade:
        key = old[0]
        raise ConfigError(f"{_join(label, key)}: this key is now called {renamed[key]!r}; rename it")
    out = dict(data)
    for key in old:
        if renamed[key] in out:
            raise ConfigError(f"{_join(label, key)}: given together with its new name {renamed[key]!r}")
        out[renamed[key]] = out.pop(key)
    return out


def _holds_nodes(tp: Any) -> bool:
    """Whether values of type ``tp`` may contain component nodes (a dataclass with component fields, ...)."""
    if tp is Node:
        return True
    if dataclasses.is_dataclass(tp):
        return any(f.metadata.get("component") for f in dataclasses.fields(tp)) or any(
            _holds_nodes(h) for h in typing.get_type_hints(tp).values()
        )
    return any(_holds_nodes(a) for a in get_args(tp))


def _yaml_key(f: dataclasses.Field) -> str:
    """The YAML key of a dataclass field: its name, or ``metadata["key"]`` (``global`` for ``global_``)."""
    return str(f.metadata.get("key", f.name))


def _join(label: str, key: str) -> str:
    return f"{label}.{key}" if label else str(key)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(
    tp: Any, value: Any, key: str, resolve: Resolver | None, kind: str | None = None, upgrade: bool = False
) -> Any:
    """Check ``value`` against type ``tp``; ``kind`` is the component kind of a :func:`component` field."""
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if tp is Node:
        if kind is None:
            raise TypeError(f"{key}: a Node field must be declared with component(kind)")
        if resolve is None:
            raise TypeError(f"{key}: parsing a {kind} node needs a resolver (parse_dataclass(..., resolve=...))")
        return parse_node(kind, value, resolve, key, upgrade=upgrade)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, resolve, kind, upgrade)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}{did_you_mean(str(value), map(str, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return parse_dataclass(tp, value, where=key, resolve=resolve, upgrade=upgrade)
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}.{i}", resolve, kind, upgrade) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_coerce(item, v, f"{key}.{i}", resolve, kind, upgrade) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v, f"{key}.{k}", resolve, kind, upgrade) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML reads 3e-4 (no dot) as a string
                except ValueError:
                    pass
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return value
    return value
