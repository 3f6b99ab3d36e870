"""Component registry: every model, encoder, data source, env ... is registered by (kind, name).

Plugins register lazy ``"pkg.module:Attr"`` targets through the ``register_*`` hooks; the registry
imports a target only when it is built. A YAML node ``{name: <component>, **fields}`` is validated once
into a typed :class:`~foundry_core.config.Node` (the component's ``Config`` instance) by the config
parser, which asks ``Registry.config_class`` through a resolver callable; the component is then built
from that node via its ``from_config(cfg, ctx)`` classmethod.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from foundry_core.config import Node, parse_node
from foundry_core.errors import ComponentError, did_you_mean

if TYPE_CHECKING:
    import pluggy

#: Which registration hook fills which component kind.
HOOK_KIND: dict[str, str] = {
    "register_models": "model",
    "register_encoders": "encoder",
    "register_backbones": "backbone",
    "register_action_experts": "action_expert",
    "register_data_sources": "data_source",
    "register_tasks": "task",
    "register_converters": "converter",
    "register_callbacks": "callback",
    "register_optimizers": "optimizer",
    "register_schedules": "schedule",
}
KINDS: tuple[str, ...] = tuple(HOOK_KIND.values())

@dataclass(frozen=True)
class ComponentSpec:
    """One registered component.

    Attributes:
        kind: component kind (``model``, ``encoder``, ...).
        name: the name used in YAML (``name: flow_matching``).
        target: the class/factory, or ``"pkg.module:Attr"`` imported on first use.
        provider: the plugin (distribution) that registered it.
        description: one line for ``foundry components``.
    """

    kind: str
    name: str
    target: object | str
    provider: str
    description: str = ""

    def load(self) -> Any:
        """Import (if needed) and return the component class or factory."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")  # "pkg.module" alone names the module
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ComponentError(
                f"{self.kind} {self.name!r} (from {self.provider}) cannot be imported: {exc}"
            ) from exc
        if not attr:
            return module
        try:
            return getattr(module, attr)
        except AttributeError as exc:
            raise ComponentError(f"{self.kind} {self.name!r}: {module_name} has no attribute {attr!r}") from exc


@dataclass
class BuildContext:
    """Runtime objects a component may need while it is built.

    Attributes:
        registry: the registry, for building nested components.
        device: torch device string (``"cpu"``, ``"cuda:0"``).
        dims: widths of already-built parts (``{"backbone": 768}``).
        tokenizer: the run's tokenizer, when there is one.
        pretrained_dir: set when rebuilding a model from an export folder.
        data_sources: the run's ``data.mix`` sources by label, built once by the trainer before the
            model, which takes the metadata it needs from them (a ``vla``: the robot source's
            ``metadata()`` and ``stats``, see ``interfaces.RobotDataSource``). Empty outside training.
        extras: anything else a plugin wants to pass down.
    """

    registry: Registry
    device: str = "cpu"
    dims: dict[str, int] = field(default_factory=dict)
    tokenizer: Any = None
    pretrained_dir: str | None = None
    data_sources: Mapping[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class Registry:
    """All components known to a plugin manager, keyed by (kind, name)."""

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str], ComponentSpec] = {}

    def add(self, spec: ComponentSpec) -> None:
        """Add a component; a second registration of the same (kind, name) is an error naming both."""
        if spec.kind not in KINDS:
            raise ComponentError(f"unknown component kind {spec.kind!r}{did_you_mean(spec.kind, KINDS)}")
        key = (spec.kind, spec.name)
        old = self._specs.get(key)
        if old is not None:
            raise ComponentError(
                f"{spec.kind} {spec.name!r} is registered twice: by {old.provider} ({old.target!r}) "
                f"and by {spec.provider} ({spec.target!r})"
            )
        self._specs[key] = spec

    def kinds(self) -> list[str]:
        return list(KINDS)

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(name for k, name in self._specs if k == kind)

    def specs(self, kind: str | None = None) -> list[ComponentSpec]:
        return sorted(
            (s for s in self._specs.values() if kind is None or s.kind == kind), key=lambda s: (s.kind, s.name)
        )

    def get(self, kind: str, name: str) -> ComponentSpec:
        """Return the spec or raise with close matches and, if known, the package to install."""
        self._check_kind(kind)
        spec = self._specs.get((kind, name))
        if spec is not None:
            return spec
        msg = f"no {kind} named {name!r}{did_you_mean(name, self.names(kind))}"
        from foundry_core.first_party import FIRST_PARTY

        for plugin, table in FIRST_PARTY.items():
            if name in table.get(kind, []):
                from foundry_core.plugins import install_hint

                msg += f" ({name!r} is provided by {plugin}: {install_hint(plugin)})"
        known = ", ".join(self.names(kind)) or "none installed"
        raise ComponentError(f"{msg}. Known {kind} names: {known}")

    def config_class(self, kind: str, name: str) -> type | None:
        """The ``Config`` dataclass of component (kind, name), None when it takes no fields: the resolver
        that :func:`foundry_core.config.parse_dataclass` asks (``resolve=registry.config_class``)."""
        return getattr(self.get(kind, name).load(), "Config", None)

    def node(self, kind: str, value: Mapping[str, Any] | str | Node, where: str = "", *, upgrade: bool = False) -> Node:
        """Validate a YAML component node ``{name: ..., **fields}`` into a typed :class:`Node`.

        ``upgrade``: the node was written by Foundry (an export): read renamed keys under their new name.
        """
        return parse_node(kind, value, self.config_class, where, upgrade=upgrade)

    def build(
        self, kind: str, node: Node | Mapping[str, Any] | str, ctx: BuildContext | None = None, where: str = ""
    ) -> Any:
        """Build a component from its typed node (a YAML mapping is validated into one first)."""
        ctx = ctx or BuildContext(registry=self)
        node = self.node(kind, node, where)
        try:
            cls = self.get(kind, node.name).load()
        except ComponentError as exc:
            raise ComponentError(f"{where or kind}: {exc}") from None
        if hasattr(cls, "from_config"):
            return cls.from_config(node.config, ctx)
        return cls(node.config) if node.config is not None else cls()

    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ComponentError(f"unknown component kind {kind!r}{did_you_mean(kind, KINDS)}")


def record_plugin_error(pm: pluggy.PluginManager, name: str, error: str, what: str, where: str = "") -> None:
    """Remember (for ``foundry plugins``) and warn about a failure inside plugin ``name``; the rest keeps working."""
    errors = getattr(pm, "load_errors", None)
    if errors is not None:
        if errors.get(name) == error:
            return  # the same failure seen again (the registry is collected more than once): warn once
        errors[name] = error
    logging.getLogger("foundry_core.plugins").warning("%s plugin %s%s: %s", what, name, f" ({where})" if where else "", error)


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call every registration hookimpl one at a time so each name is attributed to its plugin.

    A hook of an installed plugin that raises is a warning naming the plugin (shown by ``foundry
    plugins``) and none of that hook's names are registered; the core's own hooks must not fail.
    """
    registry = Registry()
    for hook_name, kind in HOOK_KIND.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            added: list[ComponentSpec] = []

            def register(
                name: str,
                target: object | str,
                *,
                description: str = "",
                _kind: str = kind,
                _by: str = impl.plugin_name,
                _added: list[ComponentSpec] = added,
            ) -> None:
                _added.append(ComponentSpec(_kind, name, target, _by, description))

            try:
                impl.function(register=register)
            except Exception as exc:
                if impl.plugin_name == "foundry-core":
                    raise
                record_plugin_error(pm, impl.plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}", "a hook failed in")
                continue
            for spec in added:
                registry.add(spec)
    return registry

