"""Built-in commands: plugins, components, config show/validate, train."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from foundry_core.config import dump_yaml, resolve_config
from foundry_core.registry import KINDS, collect

if TYPE_CHECKING:
    from foundry_core.cli.groups import PmFactory


def add_builtin_commands(cli: click.Group, pm_factory: PmFactory) -> None:
    @cli.command()
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plugins(as_json: bool) -> None:
        """List installed plugins, their versions, hooks and the components each registers."""
        from foundry_core.plugins import plugin_infos

        pm = pm_factory()
        registry = collect(pm)
        rows = []
        for info in plugin_infos(pm):
            provided = [f"{s.kind}:{s.name}" for s in registry.specs() if s.provider == info.name]
            rows.append({**info.__dict__, "hooks": list(info.hooks), "components": provided})
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for row in rows:
            if row["error"]:
                click.secho(f"{row['name']}  FAILED TO LOAD: {row['error']}", fg="red")
                continue
            click.echo(
                f"{row['name']} {row['version']}  ({row['module']}; distribution {row['distribution']})"
            )
            click.echo(f"  hooks: {', '.join(row['hooks']) or '-'}")
            click.echo(f"  components: {', '.join(row['components']) or '-'}")

    @cli.command()
    @click.argument("kind", required=False, type=click.Choice(KINDS))
    def components(kind: str | None) -> None:
        """List registered components (of KIND): name, provider, what it is and where it lives."""
        from foundry_core.catalog import target_text

        registry = collect(pm_factory())
        specs = registry.specs(kind)
        if not specs:
            click.echo(f"no {kind or ''} components registered".replace("  ", " "))
        current = None
        for spec in specs:
            if spec.kind != current:
                current = spec.kind
                click.secho(f"{spec.kind}:", bold=True)
            click.echo(f"  {spec.name:<24} {spec.provider:<24} {spec.description}")
            click.echo(f"  {'':<24} {'':<24} -> {target_text(spec)}")

    @cli.group()
    def config() -> None:
        """Show or validate a run config."""

    @config.command("show")
    @click.argument("path", type=click.Path(dir_okay=False))
    @click.argument("overrides", nargs=-1)
    def config_show(path: str, overrides: tuple[str, ...]) -> None:
        """Print the resolved config (includes merged, overrides applied, validated)."""
        cfg = _validated(path, overrides, pm_factory)
        click.echo(dump_yaml(cfg), nl=False)

    @config.command("validate")
    @click.argument("path", type=click.Path(dir_okay=False))
    @click.argument("overrides", nargs=-1)
    def config_validate(path: str, overrides: tuple[str, ...]) -> None:
        """Check a run config; exit 2 with the first error."""
        _validated(path, overrides, pm_factory)
        click.echo(f"{path}: ok")

    @cli.command(context_settings={"ignore_unknown_options": True})
    @click.argument("config_path", metavar="CONFIG", type=click.Path(dir_okay=False))
    @click.argument("overrides", nargs=-1)
    @click.option("--resume", default=None, help="'latest' or a checkpoint path (local or remote).")
    @click.option(
        "--trust-checkpoint",
        is_flag=True,
        help="Resume from a checkpoint without a checksum manifest (one you wrote, in a folder only you can write).",
    )
    def train(
        config_path: str, overrides: tuple[str, ...], resume: str | None, trust_checkpoint: bool
    ) -> None:
        """Train from a YAML run config, with dotted key=value overrides after it.

        Exit status: 0 when the budget is spent and the model exported; 2 for a bad config, data or
        checkpoint; 130 (143) when stopped by Ctrl-C (SIGTERM), after saving a checkpoint.
        """
        from foundry_core.train.run import run

        run(config_path, list(overrides), resume=resume, pm=pm_factory(), trust_checkpoint=trust_checkpoint)

    @cli.command("export")
    @click.argument("checkpoint", metavar="CHECKPOINT")
    @click.option(
        "--out",
        default=None,
        help="Export folder (default <run>/exports/step_XXXXXXXX); replaced only if an export.",
    )
    @click.option(
        "--trust-checkpoint",
        is_flag=True,
        help="Export a checkpoint without a checksum manifest (one you wrote, in a folder only you can write).",
    )
    def export(checkpoint: str, out: str | None, trust_checkpoint: bool) -> None:
        """Turn a checkpoint (a step folder, or a run folder: its newest) into a servable export.

        The export is the one training writes at its end: weights as safetensors, config, normalization
        statistics, policy metadata. Exit status: 0 when written; 2 for a missing, incomplete or
        unverifiable checkpoint, or an --out that is not an export.
        """
        from foundry_core.export import export_checkpoint

        path = export_checkpoint(
            checkpoint, out, registry=collect(pm_factory()), trust_checkpoint=trust_checkpoint
        )
        click.echo(f"exported {checkpoint} -> {path}")

    from foundry_core.cli.llm import add_llm_commands

    add_llm_commands(cli)


def _validated(path: str, overrides: tuple[str, ...], pm_factory: PmFactory) -> dict:
    """Resolve and, when it is a run config, validate against the run schema and the registry."""
    raw = resolve_config(path, overrides)
    if "model" in raw or "train" in raw:
        from foundry_core.config import parse_dataclass, to_dict
        from foundry_core.run_config import RunConfig

        return to_dict(parse_dataclass(RunConfig, raw, where="", resolve=collect(pm_factory()).config_class))
    return raw
