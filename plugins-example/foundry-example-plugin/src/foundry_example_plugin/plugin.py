"""Entry module of the example plugin: what a third-party Foundry plugin looks like.

Import-light on purpose: component targets are strings, the command imports torch in its body.
"""

from __future__ import annotations

import click

from foundry_core.hookspecs import Register, hookimpl


@hookimpl
def register_action_experts(register: Register) -> None:
    register(
        "mlp_chunk",
        "foundry_example_plugin.mlp_expert:MLPChunkExpert",
        description="pooled-conditioning MLP that regresses an action window (example plugin)",
    )


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.group("example")
    def example() -> None:
        """Commands of the example plugin (foundry-example-plugin)."""

    @example.command("describe-expert")
    @click.option("--cond-dim", default=64, show_default=True, help="Width of the backbone tokens.")
    @click.option("--action-dim", default=10, show_default=True)
    @click.option("--proprio-dim", default=10, show_default=True)
    @click.option("--window", default=16, show_default=True, help="Steps in the action window the expert predicts (past + 1 + future).")
    @click.option("--hidden", default=256, show_default=True)
    def describe_expert(cond_dim: int, action_dim: int, proprio_dim: int, window: int, hidden: int) -> None:
        """Build the MLP expert for the given sizes and print its parameter count and output shape."""
        from foundry_example_plugin.mlp_expert import describe

        click.echo(describe(cond_dim, action_dim, proprio_dim, window, hidden))
