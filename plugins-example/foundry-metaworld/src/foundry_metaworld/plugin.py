"""foundry-metaworld plugin entry module: registers every Meta-World MT50 task. Import-light (no MuJoCo)."""

from __future__ import annotations

from foundry_core.hookspecs import Register, hookimpl
from foundry_metaworld.catalog import MT50


@hookimpl(specname="register_tasks")
def register_metaworld_tasks(register: Register) -> None:
    for name, info in MT50.items():
        register(
            name,
            f"foundry_metaworld.task:{info.task_name}",
            description=f"Meta-World {info.env_id} ({info.difficulty}): {info.instruction}",
        )
