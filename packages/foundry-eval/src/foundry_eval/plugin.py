"""foundry-eval plugin entry module. Import-light: register strings, never import torch here."""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl  # noqa: F401


@hookimpl(specname="register_tasks")
def register_fake_tasks(register: Register) -> None:
    register(
        "point_reach",
        "foundry_eval.rollout.fake_task:PointReach",
        description="fake simulator: 2-D point reaching (fast CPU tests of rollouts and serving)",
    )


@hookimpl
def register_callbacks(register: Register) -> None:
    register(
        "closed_loop_eval",
        "foundry_eval.closed_loop:ClosedLoopEval",
        description="every N steps: export, roll out on named tasks, log success with its 90% interval",
    )


@hookimpl(specname="register_commands")
def register_rollout_commands(cli) -> None:  # noqa: ANN001 (click.Group, imported lazily)
    from foundry_eval.rollout.cli import add_commands

    add_commands(cli)


@hookimpl(specname="register_commands")
def register_compare_command(cli) -> None:  # noqa: ANN001 (click.Group, imported lazily)
    from foundry_core.cli.groups import group
    from foundry_eval.compare_cli import compare_command

    group(cli, "eval").add_command(compare_command)


@hookimpl(specname="register_commands")
def register_import_lbm_command(cli) -> None:  # noqa: ANN001 (click.Group, imported lazily)
    from foundry_core.cli.groups import group
    from foundry_eval.lbm_results import import_lbm_command

    group(cli, "eval").add_command(import_lbm_command)


@hookimpl(specname="register_tasks")
def register_drake_envs(register: Register) -> None:
    tasks = "foundry_eval.sim.tasks"
    register("reach_target", f"{tasks}.reach_target:ReachTarget", description="Drake: lower the gripper onto a target disk")
    register("push_to_target", f"{tasks}.push_to_target:PushToTarget", description="Drake: push a block onto a target")
    register("pick_place_bin", f"{tasks}.pick_place_bin:PickPlaceBin", description="Drake: put a block into a bin")
    register("stack_blocks", f"{tasks}.stack_blocks:StackBlocks", description="Drake: stack red block on blue block")
    register("put_on_plate", f"{tasks}.put_on_plate:PutOnPlate", description="Drake: set a can down on a plate")


@hookimpl(specname="register_commands")
def register_demos_command(cli) -> None:  # noqa: ANN001 (click.Group, imported lazily)
    from foundry_core.cli.groups import group
    from foundry_eval.sim.cli import demos_command

    group(cli, "eval").add_command(demos_command)

