"""foundry-action plugin entry module. Import-light: register strings, never import torch here."""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl  # noqa: F401


@hookimpl
def register_action_experts(register: Register) -> None:
    register("flow_matching", "foundry_action.experts.flow_matching:FlowMatchingExpert", description="flow matching (velocity target, K Euler steps)")
    register("diffusion", "foundry_action.experts.diffusion:DiffusionExpert", description="DDPM training, DDIM/DDPM sampling")
    register("l1_regression", "foundry_action.experts.l1_regression:L1RegressionExpert", description="direct action-window regression (L1)")


@hookimpl
def register_models(register: Register) -> None:
    register("vla", "foundry_action.vla:VLA", description="vision-language(-action) model: backbone + action expert")


@hookimpl
def register_data_sources(register: Register) -> None:
    register("zarr_episodes", "foundry_action.data_source:ZarrEpisodes", description="windows of a Zarr v3 robot-episode store")
    register("wds_robot_shards", "foundry_action.wds_source:WdsRobotShards",
             description="the reference's robotics WebDataset shards, read directly (no conversion)")


@hookimpl
def register_converters(register: Register) -> None:
    convert = "foundry_action.convert"
    register("wds", f"{convert}.wds", description="VLA Foundry WebDataset robotics shards (manifest.jsonl / *.tar)")
    register("lerobot_v3", f"{convert}.lerobot", description="LeRobot v3 dataset folder (meta/info.json)")
    register("replay_buffer", f"{convert}.replay_buffer", description="diffusion_policy Zarr replay buffer (data/, meta/episode_ends)")
    register("lbm_spartan", f"{convert}.spartan",
             description="LBM public sim training data: diffusion spartan episode folders (…/episode_<n>/processed/)")


@hookimpl
def register_commands(cli) -> None:  # noqa: ANN001  (a click.Group; click is imported lazily)
    from foundry_action.cli import add_commands

    add_commands(cli)
