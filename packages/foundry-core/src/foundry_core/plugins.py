"""Create the plugin manager; entry-point discovery happens once per process.

Environment switches:
    FOUNDRY_DISABLE_PLUGIN_AUTOLOAD=1  load no entry points (built-ins only)
    FOUNDRY_PLUGINS=name1,name2        load only these plugins (entry point names, e.g. foundry-vision)
    FOUNDRY_TRACE_HOOKS=1              print every hook call to stderr
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import pluggy

from foundry_core import hookspecs
from foundry_core.registry import Registry, collect, record_plugin_error

log = logging.getLogger(__name__)
BUILTINS = ("foundry_core.plugin",)
#: The first-party plugins are named ``foundry-<area>``; their distributions are ``foundry-robotics-<area>``
#: (``foundry-core`` on PyPI is an unrelated project) and live in ``packages/foundry-<area>`` of a clone.
FIRST_PARTY_PREFIX, DISTRIBUTION_PREFIX = "foundry-", "foundry-robotics-"


def install_hint(plugin: str) -> str:
    """What to install to get the first-party plugin ``plugin`` (e.g. ``foundry-vision``)."""
    area = plugin.removeprefix(FIRST_PARTY_PREFIX)
    return f"install {DISTRIBUTION_PREFIX}{area} (in a clone: pip install ./packages/{plugin})"


@dataclass(frozen=True)
class PluginInfo:
    """What ``foundry plugins`` shows about one loaded (or failed) plugin."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: tuple[str, ...] = ()
    error: str = ""


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the load errors and distribution info of our entry points."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.load_errors: dict[str, str] = {}
        self.dist_versions: dict[str, str] = {}
        self.dist_names: dict[str, str] = {}


def make_plugin_manager(*, entry_points_enabled: bool = True, strict: bool = False) -> PluginManager:
    """Build a manager with the core's built-ins and (unless disabled) all installed plugins."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    from foundry_core import __version__

    for module_name in BUILTINS:
        pm.register(importlib.import_module(module_name), name="foundry-core")
        pm.dist_versions["foundry-core"] = __version__
        pm.dist_names["foundry-core"] = f"{DISTRIBUTION_PREFIX}core"
    if entry_points_enabled and not os.environ.get("FOUNDRY_DISABLE_PLUGIN_AUTOLOAD"):
        _load_entry_points(pm, strict=strict)
    pm.check_pending()  # built-ins (and strict mode): a misspelled hookimpl fails loudly
    if os.environ.get("FOUNDRY_TRACE_HOOKS"):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    return pm


def _trace_before(hook_name: str, impls: list, kwargs: dict) -> None:
    sys.stderr.write(f"[foundry hook] {hook_name} -> {[i.plugin_name for i in impls]}\n")


def _trace_after(outcome: object, hook_name: str, impls: list, kwargs: dict) -> None:
    pass


def _wanted() -> set[str]:
    return {n.strip() for n in os.environ.get("FOUNDRY_PLUGINS", "").split(",") if n.strip()}


def _load_entry_points(pm: PluginManager, *, strict: bool) -> None:
    wanted = _wanted()
    eps: list[EntryPoint] = sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda e: e.name)
    for ep in eps:
        if (wanted and ep.name not in wanted) or pm.is_blocked(ep.name):
            continue
        if pm.get_plugin(ep.name) is not None:
            log.warning("plugin %s found twice on sys.path; keeping the first", ep.name)
            continue
        dist = ep.dist
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            if not strict:
                _check_hook_names(pm, ep.name, plugin)
        except Exception as exc:  # one broken plugin must not break the CLI: record and warn
            if strict:
                raise
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            record_plugin_error(pm, ep.name, f"{type(exc).__name__}: {exc}", "could not load", ep.value)
            continue
        if dist is not None:
            pm.dist_versions[ep.name] = dist.version
            pm.dist_names[ep.name] = dist.name


def _check_hook_names(pm: PluginManager, name: str, plugin: object) -> None:
    """A hookimpl whose name is no hookspec would silently never run: refuse the plugin, naming the hook."""
    from foundry_core.errors import did_you_mean

    specs = [h for h in vars(pm.hook) if not h.startswith("_") and getattr(pm.hook, h).has_spec()]
    for caller in pm.get_hookcallers(plugin) or ():
        if not caller.has_spec():
            raise pluggy.PluginValidationError(
                plugin, f"unknown hook {caller.name!r}{did_you_mean(caller.name, specs)}"
            )


def plugin_infos(pm: PluginManager) -> list[PluginInfo]:
    """Describe every registered plugin and every plugin that failed to load."""
    infos = []
    errors = dict(getattr(pm, "load_errors", {}))
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda np: np[0]):
        if plugin is None:
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        infos.append(
            PluginInfo(
                name=name,
                distribution=pm.dist_names.get(name, name),
                version=pm.dist_versions.get(name, "unknown"),
                module=getattr(plugin, "__name__", type(plugin).__name__),
                hooks=hooks,
                error=errors.pop(name, ""),  # loaded, but one of its hooks failed
            )
        )
    for name, err in sorted(errors.items()):
        infos.append(PluginInfo(name=name, distribution=name, version="?", module="", error=err))
    return infos


def plugin_versions(pm: PluginManager) -> dict[str, str]:
    """``{plugin: version}`` of every loaded plugin; recorded in run directories."""
    return {name: pm.dist_versions.get(name, "unknown") for name, p in pm.list_name_plugin() if p is not None}


# The process-wide caches live here, together: the default manager and the registry collected from it.
@functools.cache
def plugin_manager() -> PluginManager:
    """The process-wide default manager used by the CLI and library calls."""
    return make_plugin_manager()


@functools.cache
def get_registry() -> Registry:
    """Registry of the process-wide default plugin manager."""
    return collect(plugin_manager())


def reset_plugin_manager() -> None:
    """Forget the cached default manager and registry (tests, notebooks that installed a plugin)."""
    plugin_manager.cache_clear()
    get_registry.cache_clear()
