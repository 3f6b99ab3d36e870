"""The ``foundry`` command tree: the root group that attaches plugin commands, and the shared groups.

Plugins import :func:`group` from here (not from ``cli.main``, which builds the CLI at import time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from foundry_core.errors import FoundryError
from foundry_core.plugins import PluginManager

PmFactory = Callable[[], PluginManager]
#: Groups that several packages add subcommands to (``foundry data convert``, ``foundry eval lm``).
SHARED_GROUPS = {"data": "Prepare, convert and inspect data.", "eval": "Evaluate models and compare policies."}


class FoundryGroup(click.Group):
    """Root group: plugin commands are attached the first time the command table is read."""

    def __init__(self, *args: Any, pm_factory: PmFactory, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pm_factory = pm_factory
        self._attached = False

    def attach_plugins(self) -> None:
        if self._attached:
            return
        self._attached = True
        builtin = dict(self.commands)
        builtin_sub = {name: dict(getattr(cmd, "commands", {})) for name, cmd in builtin.items()}
        self.pm_factory().hook.register_commands(cli=self)
        for name, cmd in builtin.items():
            if self.commands.get(name) is not cmd:
                self.commands[name] = cmd
                raise FoundryError(f"a plugin tried to replace the built-in command 'foundry {name}'")
            for sub, subcmd in builtin_sub[name].items():
                if getattr(cmd, "commands", {}).get(sub) is not subcmd:
                    cmd.commands[sub] = subcmd  # type: ignore[attr-defined]
                    raise FoundryError(f"a plugin tried to replace the built-in command 'foundry {name} {sub}'")

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.attach_plugins()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self.attach_plugins()
        return super().get_command(ctx, cmd_name) or _not_installed(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FoundryError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(2)


class SharedGroup(click.Group):
    """``foundry data`` / ``foundry eval``: several packages add subcommands here."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _not_installed(f"{self.name} {cmd_name}")


def _not_installed(path: str) -> None:
    """A first-party command whose package is missing answers what to install (else click's 'No such command')."""
    from foundry_core.first_party import FIRST_PARTY_COMMANDS
    from foundry_core.plugins import install_hint

    plugin = FIRST_PARTY_COMMANDS.get(path)
    if plugin is not None:
        raise click.UsageError(
            f"'foundry {path}' is provided by {plugin}, which is not installed (or failed to load: see "
            f"'foundry plugins'): {install_hint(plugin)}"
        )
    return None


def group(cli: click.Group, name: str) -> click.Group:
    """The shared sub-group ``name`` of the root CLI (``data``, ``eval``), for plugins to add commands to."""
    cmd = cli.commands.get(name)
    if not isinstance(cmd, click.Group):
        raise FoundryError(f"'foundry {name}' is not a command group")
    return cmd
