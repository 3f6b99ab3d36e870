"""foundry-pipeline plugin entry module. Import-light: the command imports its stages when it runs."""

from __future__ import annotations

from foundry_core.hookspecs import hookimpl


@hookimpl(specname="register_commands")
def register_pipeline_command(cli) -> None:  # noqa: ANN001 (click.Group, imported lazily)
    from foundry_pipeline.cli import pipeline_command

    cli.add_command(pipeline_command)
