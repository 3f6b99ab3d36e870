"""The ``foundry`` command line. Heavy imports (torch, transformers, zarr, drake) live inside commands."""

from __future__ import annotations

import sys
import traceback

import click

from foundry_core import __version__
from foundry_core.cli.groups import SHARED_GROUPS, FoundryGroup, PmFactory, SharedGroup
from foundry_core.errors import FoundryError
from foundry_core.plugins import plugin_manager


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
        cli.add_command(SharedGroup(name=name, help=help_text))

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
