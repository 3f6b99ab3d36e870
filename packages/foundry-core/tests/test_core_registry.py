"""Registry: attribution, duplicates naming both providers, lazy targets, strict build, hints."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import pytest

from foundry_core.config import Node, component, parse_dataclass, to_dict
from foundry_core.errors import ComponentError, ConfigError
from foundry_core.hookspecs import hookimpl
from foundry_core.registry import BuildContext, ComponentSpec, Registry, collect


class TinyEncoder:
    @dataclass(kw_only=True)
    class Config:
        dim: int = 8
        depth: int = 1

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: Config, ctx: BuildContext) -> TinyEncoder:
        obj = cls(cfg)
        obj.device = ctx.device
        return obj


class Composite:
    @dataclass(kw_only=True)
    class Config:
        encoder: Node = component("encoder")
        scale: float = 1.0

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg


class TinyPlugin:
    @hookimpl
    def register_encoders(self, register):
        register("tiny", TinyEncoder, description="a tiny encoder")

    @hookimpl
    def register_models(self, register):
        register("composite", Composite)


def test_hook_register_encoders(foundry_pm):
    foundry_pm.register(TinyPlugin(), name="tiny-test")
    registry = collect(foundry_pm)
    enc = registry.build("encoder", {"name": "tiny", "dim": 16}, BuildContext(registry, device="meta"))
    assert registry.get("encoder", "tiny").provider == "tiny-test"
    assert enc.cfg.dim == 16 and enc.device == "meta"


def test_duplicate_component_names_both_providers(foundry_pm):
    class Other:
        @hookimpl
        def register_encoders(self, register):
            register("tiny", "somewhere.else:Thing")

    foundry_pm.register(TinyPlugin(), name="first-plugin")
    foundry_pm.register(Other(), name="second-plugin")
    with pytest.raises(ComponentError, match=r"registered twice.*first-plugin.*second-plugin|second-plugin.*first-plugin"):
        collect(foundry_pm)


def test_unknown_name_did_you_mean_and_install_hint(foundry_pm):
    foundry_pm.register(TinyPlugin(), name="tiny-test")
    registry = collect(foundry_pm)
    with pytest.raises(ComponentError, match=r"did you mean 'tiny'"):
        registry.get("encoder", "tinny")
    with pytest.raises(ComponentError, match=r"install foundry-robotics-action \(in a clone: pip install ./packages/foundry-action\)"):
        registry.get("action_expert", "flow_matching")
    with pytest.raises(ComponentError, match=r"unknown component kind 'encodr'; did you mean 'encoder'"):
        registry.get("encodr", "tiny")


def test_unknown_key_in_component_node(foundry_pm):
    foundry_pm.register(TinyPlugin(), name="tiny-test")
    registry = collect(foundry_pm)
    with pytest.raises(ConfigError, match=r"encoder\.dmi: unknown key; did you mean 'dim'"):
        registry.build("encoder", {"name": "tiny", "dmi": 3}, where="encoder")


def test_nested_component_validated_through_slot_kind(foundry_pm):
    foundry_pm.register(TinyPlugin(), name="tiny-test")
    registry = collect(foundry_pm)
    node = registry.node("model", {"name": "composite", "encoder": {"name": "tiny", "dim": 4}})
    assert node.config.encoder == Node("encoder", "tiny", TinyEncoder.Config(dim=4))
    with pytest.raises(ConfigError, match=r"model\.encoder\.depht"):
        registry.node("model", {"name": "composite", "encoder": {"name": "tiny", "depht": 4}}, where="model")
    with pytest.raises(ComponentError, match=r"model\.encoder: no encoder named 'vit'"):
        registry.node("model", {"name": "composite", "encoder": {"name": "vit"}}, where="model")


def test_lazy_target_is_imported_on_first_use(monkeypatch):
    module = types.ModuleType("lazy_target_mod")
    module.Thing = TinyEncoder
    monkeypatch.setitem(sys.modules, "lazy_target_mod", module)
    spec = ComponentSpec("encoder", "lazy", "lazy_target_mod:Thing", "me")
    assert spec.load() is TinyEncoder
    bad = ComponentSpec("encoder", "broken", "no_such_module_xyz:Thing", "me")
    with pytest.raises(ComponentError, match="cannot be imported"):
        bad.load()


def test_registry_rejects_unknown_kind():
    with pytest.raises(ComponentError):
        Registry().add(ComponentSpec("encoders", "x", object, "me"))


def test_core_builtins_are_registered_through_hooks(foundry_registry):
    assert "transformer" in foundry_registry.names("model")
    assert foundry_registry.get("optimizer", "adamw").provider == "foundry-core"


def test_component_field_needs_a_resolver():
    with pytest.raises(TypeError, match=r"encoder: parsing a encoder node needs a resolver"):
        parse_dataclass(Composite.Config, {"encoder": "tiny"})


def test_node_is_typed_once_and_built_without_a_second_parse(foundry_pm, monkeypatch):
    """The resolver is asked once per node at parse time; build() then only loads the class."""
    foundry_pm.register(TinyPlugin(), name="tiny-test")
    registry = collect(foundry_pm)
    asked: list[tuple[str, str]] = []

    def resolve(kind: str, name: str):
        asked.append((kind, name))
        return registry.config_class(kind, name)

    cfg = parse_dataclass(Composite.Config, {"encoder": "tiny", "scale": 2}, resolve=resolve)
    assert asked == [("encoder", "tiny")] and cfg.encoder.config.dim == 8
    monkeypatch.setattr(registry, "config_class", lambda *a: pytest.fail("build parsed the node again"))
    enc = registry.build("encoder", cfg.encoder, BuildContext(registry, device="meta"))
    assert enc.cfg is cfg.encoder.config
    assert to_dict(cfg) == {"encoder": {"name": "tiny", "dim": 8, "depth": 1}, "scale": 2.0}


def test_node_of_another_kind_is_refused(foundry_pm):
    foundry_pm.register(TinyPlugin(), name="tiny-test")
    registry = collect(foundry_pm)
    with pytest.raises(ConfigError, match=r"slot: expected a model node, got a encoder node \('tiny'\)"):
        registry.build("model", registry.node("encoder", "tiny"), where="slot")


def test_config_imports_neither_the_registry_nor_the_plugins():
    """config <-> registry is one-way: parsing takes a resolver, so config.py imports no registry."""
    from foundry_core.testing import modules_imported_by

    modules, _ = modules_imported_by("import foundry_core.config, foundry_core.run_config")
    assert "foundry_core.config" in modules
    assert not modules & {"foundry_core.registry", "foundry_core.plugins", "foundry_core.first_party", "pluggy", "torch"}
