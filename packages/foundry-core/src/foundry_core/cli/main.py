"""The ``foundry`` command line. Heavy imports (torch, transformers, zarr, drake) live inside commands."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from foundry_core import __version__
from foundry_core.errors import FoundryError
from foundry_core.plugins import PluginManager, plugin_manager

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
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FoundryError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.secho(f"error: {exc}", err=True, fg="red")
            ctx.exit(2)


def group(cli: click.Group, name: str) -> click.Group:
    """The shared sub-group ``name`` of the root CLI (``data``, ``eval``), for plugins to add commands to."""
    cmd = cli.commands.get(name)
    if not isinstance(cmd, click.Group):
        raise FoundryError(f"'foundry {name}' is not a command group")
    return cmd


def build_cli(pm_factory: PmFactory = plugin_manager) -> click.Group:
    """Build the root command; tests pass ``lambda: isolated_pm``."""

    @click.group(cls=FoundryGroup, pm_factory=pm_factory, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(__version__, prog_name="foundry")
    @click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
    @click.pass_context
    def cli(ctx: click.Context, debug: bool) -> None:
        """Foundry: train LLMs, VLMs and VLA robot policies with one trainer, evaluate them in simulation
        and compare them with sound statistics."""
        ctx.ensure_object(dict)
        ctx.obj["debug"] = debug
        ctx.obj["pm_factory"] = pm_factory

    for name, help_text in SHARED_GROUPS.items():
        cli.add_command(click.Group(name=name, help=help_text))

    from foundry_core.cli import commands

    commands.add_builtin_commands(cli, pm_factory)
    return cli


_cli = build_cli()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        _cli.main(args=argv, prog_name="foundry", standalone_mode=True)
    except FoundryError as exc:  # raised while attaching plugin commands, before invoke()
        if "--debug" in (argv if argv is not None else sys.argv):
            traceback.print_exc()
        click.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)


if __name__ == "__main__":
    main()
