"""Everything written about the registered components is derived from the registry, never kept by hand.

The docs tables (``docs/architecture.md``, ``docs/plugin-hooks.md``) and the first-party name list
(``foundry_core/first_party.py``, for "install X" hints when a package is missing) are generated
with cog from these functions; ``tests/test_generated.py`` fails when a checked-in copy is stale.
Regenerate: ``uv run cog -r docs/architecture.md docs/plugin-hooks.md packages/foundry-core/src/foundry_core/first_party.py``.
"""

from __future__ import annotations

import json

import click

from foundry_core.plugins import DISTRIBUTION_PREFIX, PluginManager, make_plugin_manager
from foundry_core.registry import HOOK_KIND, ComponentSpec, Registry, collect


def installed() -> tuple[PluginManager, Registry]:
    """A fresh manager with every installed plugin (strict: a broken plugin fails the generation)."""
    pm = make_plugin_manager(strict=True)
    return pm, collect(pm)


def first_party_plugins(pm: PluginManager) -> list[str]:
    """Plugins shipped in this repository's ``packages/`` (their distributions are ``foundry-robotics-*``),
    except the core, which is always installed."""
    return sorted(
        name for name, dist in pm.dist_names.items() if dist.startswith(DISTRIBUTION_PREFIX) and name != "foundry-core"
    )


def first_party_names(pm: PluginManager, registry: Registry) -> dict[str, dict[str, list[str]]]:
    """``{plugin: {kind: [names]}}`` of the first-party plugins other than the core."""
    table: dict[str, dict[str, list[str]]] = {}
    for plugin in first_party_plugins(pm):
        for spec in registry.specs():
            if spec.provider == plugin:
                table.setdefault(plugin, {}).setdefault(spec.kind, []).append(spec.name)
    return table


def _command_paths(group: click.Group, prefix: str = "") -> set[str]:
    paths = set()
    for name in group.list_commands(click.Context(group)):
        cmd = group.get_command(click.Context(group), name)
        paths.add(prefix + name)
        if isinstance(cmd, click.Group):
            paths |= _command_paths(cmd, f"{prefix}{name} ")
    return paths


def first_party_commands(pm: PluginManager) -> dict[str, list[str]]:
    """``{"eval compare": plugin, ...}`` inverted: the command paths each first-party plugin adds."""
    from foundry_core.cli.main import build_cli

    def with_plugins(names: list[str]) -> set[str]:
        only = make_plugin_manager(entry_points_enabled=False)
        for name in names:
            only.register(pm.get_plugin(name), name=name)
        return _command_paths(build_cli(lambda: only))

    core = with_plugins([])
    return {plugin: sorted(with_plugins([plugin]) - core) for plugin in first_party_plugins(pm)}


def first_party_source() -> str:
    """The body of ``first_party.py``: the ``FIRST_PARTY`` component names and ``FIRST_PARTY_COMMANDS``."""
    pm, registry = installed()
    lines = ["FIRST_PARTY: dict[str, KindNames] = {"]
    for plugin, kinds in first_party_names(pm, registry).items():
        lines.append(f"    {json.dumps(plugin)}: {{")
        lines.extend(f"        {json.dumps(kind)}: {json.dumps(names)}," for kind, names in sorted(kinds.items()))
        lines.append("    },")
    lines.append("}")
    lines.append("#: command path (``eval compare``) -> the first-party plugin that adds it")
    lines.append("FIRST_PARTY_COMMANDS: dict[str, str] = {")
    for plugin, paths in first_party_commands(pm).items():
        lines.extend(f"    {json.dumps(path)}: {json.dumps(plugin)}," for path in paths)
    lines.append("}")
    return "\n".join(lines) + "\n"


def target_text(spec: ComponentSpec) -> str:
    """``package.module:Attr`` of a component (what ``foundry components`` and the docs show)."""
    if isinstance(spec.target, str):
        return spec.target
    return f"{spec.target.__module__}:{getattr(spec.target, '__qualname__', spec.target)}"


def components_markdown() -> str:
    """One row per registered component: kind (hook), name, provider, target, description."""
    _, registry = installed()
    hook_of = {kind: hook for hook, kind in HOOK_KIND.items()}
    rows = ["| kind (hook) | name | provider | target | what |", "|---|---|---|---|---|"]
    for spec in registry.specs():
        rows.append(
            f"| `{spec.kind}` (`{hook_of[spec.kind]}`) | `{spec.name}` | {spec.provider} | `{target_text(spec)}` | "
            f"{spec.description.replace('|', '/')} |"
        )
    return "\n".join(rows) + "\n"


def hook_names_markdown() -> str:
    """Per registration hook, the names registered today (``docs/plugin-hooks.md``)."""
    _, registry = installed()
    rows = ["| hook | kind | registered today |", "|---|---|---|"]
    for hook, kind in HOOK_KIND.items():
        names = ", ".join(f"`{n}`" for n in registry.names(kind)) or "none"
        rows.append(f"| `{hook}` | `{kind}` | {names} |")
    return "\n".join(rows) + "\n"
