"""The ``foundry`` command tree: the root group that attaches plugin commands, and the shared groups.

Plugins import :func:`group` from here (not from ``cli.main``, which builds the CLI at import time).
"""

from __future__ import annotations

import traceback
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
        """Call each plugin's ``register_commands``; a plugin that raises or shadows a built-in command is
        refused with a warning naming it (shown by ``foundry plugins``) and every other command keeps working."""
        if self._attached:
            return
        self._attached = True
        from foundry_core.plugins import record_plugin_error

        builtin = dict(self.commands)
        builtin_sub = {name: dict(getattr(cmd, "commands", {})) for name, cmd in builtin.items()}
        pm = self.pm_factory()
        for impl in reversed(pm.hook.register_commands.get_hookimpls()):  # the order a hook call uses
            try:
                impl.function(cli=self)
            except Exception as exc:
                if impl.plugin_name == "foundry-core":
                    raise
                error = f"register_commands raised {type(exc).__name__}: {exc}"
                record_plugin_error(pm, impl.plugin_name, error, "a hook failed in")
            for shadowed in _restore_builtins(self, builtin, builtin_sub):
                error = f"tried to replace the built-in command 'foundry {shadowed}' (refused)"
                record_plugin_error(pm, impl.plugin_name, error, "a hook failed in")

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
            debug = bool(ctx.obj and ctx.obj.get("debug"))
            if debug:
                traceback.print_exc()
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.secho("interrupted (Ctrl-C)", err=True, fg="red")
            ctx.exit(130)
        except OSError as exc:  # a path the user gave is missing, read-only, full: name it, no traceback
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.secho(f"error: {describe_os_error(exc)} (--debug shows the traceback)", err=True, fg="red")
            ctx.exit(2)


def describe_os_error(exc: OSError) -> str:
    """``/x/y: Permission denied; <what to do>`` for the common cases."""
    import errno

    path = exc.filename if exc.filename is not None else "a file"
    hints = {
        errno.EACCES: "check the permissions or choose another output folder",
        errno.EROFS: "the filesystem is read-only: choose another output folder",
        errno.ENOENT: "check the path (its parent folder must exist)",
        errno.ENOSPC: "the disk is full: free space or choose another output folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "it already exists",
    }
    hint = hints.get(exc.errno or 0, "check the path")
    return f"{path}: {exc.strerror or exc}; {hint}"


def _restore_builtins(
    cli: click.Group, builtin: dict[str, click.Command], builtin_sub: dict[str, dict[str, click.Command]]
) -> list[str]:
    """Put back any built-in (sub)command a plugin replaced; return the names it tried to replace."""
    shadowed = []
    for name, cmd in builtin.items():
        if cli.commands.get(name) is not cmd:
            cli.commands[name] = cmd
            shadowed.append(name)
        for sub, subcmd in builtin_sub[name].items():
            if getattr(cmd, "commands", {}).get(sub) is not subcmd:
                cmd.commands[sub] = subcmd  # type: ignore[attr-defined]
                shadowed.append(f"{name} {sub}")
    return shadowed


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
