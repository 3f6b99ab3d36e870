"""Config resolution: includes, deep merge, overrides, strict dataclass validation, clear errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from foundry_core.config import apply_overrides, deep_merge, load_config_file, parse_dataclass, resolve_config
from foundry_core.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_include_deep_merge_later_wins_and_nested_override(tmp_path):
    write(tmp_path / "base.yaml", "model: {name: transformer, depth: 2, width: 64}\ntrain: {lr: 0.1}\n")
    write(tmp_path / "extra.yaml", "train: {lr: 0.2, clip: 1.0}\n")
    write(tmp_path / "run.yaml", "include: [base.yaml, extra.yaml]\nmodel: {depth: 4}\n")
    cfg = load_config_file(tmp_path / "run.yaml")
    # one nested field of an included block is overridden; the siblings survive
    assert cfg == {"model": {"name": "transformer", "depth": 4, "width": 64}, "train": {"lr": 0.2, "clip": 1.0}}


def test_include_relative_to_including_file(tmp_path):
    (tmp_path / "presets").mkdir()
    write(tmp_path / "presets" / "a.yaml", "include: b.yaml\nx: 1\n")
    write(tmp_path / "presets" / "b.yaml", "y: 2\n")
    write(tmp_path / "run.yaml", "include: presets/a.yaml\n")
    assert load_config_file(tmp_path / "run.yaml") == {"x": 1, "y": 2}


def test_include_cycle_is_reported(tmp_path):
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config_file(tmp_path / "a.yaml")


def test_missing_include_names_file(tmp_path):
    write(tmp_path / "a.yaml", "include: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config_file(tmp_path / "a.yaml")


def test_malformed_yaml_has_line_and_column(tmp_path):
    write(tmp_path / "bad.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+"):
        load_config_file(tmp_path / "bad.yaml")


def test_overrides_dotted_lists_null_and_create():
    cfg = {"a": {"b": {"c": 1}}, "l": [{"x": 1}, {"x": 2}]}
    out = apply_overrides(cfg, ["a.b.c=5", "a.b.d=[1, 2]", "a.e=null", "new.key=hello", "l.1.x=9"])
    assert out == {"a": {"b": {"c": 5, "d": [1, 2]}, "e": None}, "new": {"key": "hello"}, "l": [{"x": 1}, {"x": 9}]}
    assert cfg["a"]["b"]["c"] == 1  # input untouched


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", "l.7.x=1"])
def test_bad_overrides(bad):
    with pytest.raises(ConfigError):
        apply_overrides({"l": [{"x": 1}]}, [bad])


def test_resolve_config_applies_overrides(tmp_path):
    write(tmp_path / "r.yaml", "train: {lr: 0.1}\n")
    assert resolve_config(tmp_path / "r.yaml", ["train.lr=3e-4"]) == {"train": {"lr": 3e-4}}


def test_deep_merge_replaces_non_mappings():
    assert deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"d": 2}}) == {"a": [3], "b": {"c": 1, "d": 2}}


@dataclass(kw_only=True)
class Inner:
    depth: int = 2
    act: Literal["gelu", "relu"] = "gelu"


@dataclass(kw_only=True)
class Outer:
    name: str
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=list)
    maybe: int | None = None
    flag: bool = False


def test_parse_dataclass_nested_and_types():
    cfg = parse_dataclass(Outer, {"name": "x", "lr": 1, "inner": {"depth": 4}, "sizes": [1, 2], "maybe": None})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.inner.depth == 4 and cfg.inner.act == "gelu"
    assert cfg.sizes == [1, 2] and cfg.maybe is None


def test_yaml_exponent_string_is_accepted_as_float():
    assert parse_dataclass(Outer, {"name": "x", "lr": "3e-4"}).lr == pytest.approx(3e-4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "inner": {"dept": 3}}, r"inner\.dept: unknown key; did you mean 'depth'"),
        ({"name": "x", "lr": "fast"}, r"lr: expected a number"),
        ({"name": "x", "inner": {"act": "gelu2"}}, r"inner\.act: 'gelu2' is not one of"),
        ({"name": "x", "sizes": [1, "a"]}, r"sizes\.1: expected an integer"),
        ({"name": "x", "flag": "yes"}, r"flag: expected true/false"),
        ({}, r"name: required field is missing"),
        ({"name": "x", "inner": 3}, r"inner: expected a mapping"),
    ],
)
def test_parse_dataclass_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_dataclass(Outer, data, where="cfg")


@dataclass
class Renamed:
    window: int = 1
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"horizon": "window"}


def test_renamed_key_fails_naming_the_new_key_and_upgrades_only_when_asked():
    with pytest.raises(ConfigError, match=r"cfg\.horizon: this key is now called 'window'; rename it"):
        parse_dataclass(Renamed, {"horizon": 4}, where="cfg")
    assert parse_dataclass(Renamed, {"horizon": 4}, upgrade=True).window == 4
    with pytest.raises(ConfigError, match=r"horizon: given together with its new name 'window'"):
        parse_dataclass(Renamed, {"horizon": 4, "window": 4}, upgrade=True)
