"""Names registered by the first-party plugins, so a config naming one of a package you have not
installed is told what to install (``Registry.get``). Generated from the registry of the full
workspace (``foundry_core.catalog``); ``tests/test_generated.py`` fails when it is stale.
"""

from __future__ import annotations

#: kind -> names registered under it
KindNames = dict[str, list[str]]

# [[[cog import foundry_core.catalog as c; cog.out(c.first_party_source()) ]]]
FIRST_PARTY: dict[str, KindNames] = {
    "foundry-action": {
        "action_expert": ["diffusion", "flow_matching", "l1_regression"],
        "converter": ["lbm_spartan", "lerobot_v3", "replay_buffer", "wds"],
        "data_source": ["wds_robot_shards", "zarr_episodes"],
        "model": ["vla"],
    },
    "foundry-eval": {
        "callback": ["closed_loop_eval"],
        "task": ["pick_place_bin", "point_reach", "push_to_target", "put_on_plate", "reach_target", "stack_blocks"],
    },
    "foundry-vision": {
        "backbone": ["foundry_vlm", "hf_vlm", "vision_encoder"],
        "data_source": ["synthetic_image_caption", "wds_image_caption"],
        "encoder": ["hf_vision_encoder", "keypoint_cnn", "vit"],
        "model": ["hf_vlm", "vlm"],
    },
}
#: command path (``eval compare``) -> the first-party plugin that adds it
FIRST_PARTY_COMMANDS: dict[str, str] = {
    "data convert": "foundry-action",
    "data inspect": "foundry-action",
    "data stats": "foundry-action",
    "data validate": "foundry-action",
    "eval compare": "foundry-eval",
    "eval demos": "foundry-eval",
    "eval import-lbm": "foundry-eval",
    "eval run": "foundry-eval",
    "serve": "foundry-eval",
    "pipeline": "foundry-pipeline",
    "generate": "foundry-vision",
}
# [[[end]]]
