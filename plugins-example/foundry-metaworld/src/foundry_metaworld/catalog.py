"""The Meta-World MT50 task catalogue as plain data: registry names, Meta-World ids, difficulty, instructions.

Import-light on purpose (the plugin module reads it to register names without importing MuJoCo).
Difficulty groups are the ones the common evaluation protocol reports MT50 by (LeRobot's, after Seo et
al. 2022, "Masked World Models for Visual Control"): 28 easy, 11 medium, 6 hard, 5 very hard.
Instructions are ours: one imperative sentence per task that names what differs between tasks, so one
language-conditioned policy can be trained on a mix of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    """One Meta-World task: its id in ``metaworld``, difficulty group and instruction."""

    env_id: str
    difficulty: str
    instruction: str

    @property
    def registry_name(self) -> str:
        """``pick-place-v3`` -> ``metaworld_pick_place``."""
        return "metaworld_" + self.env_id.removesuffix("-v3").replace("-", "_")

    @property
    def task_name(self) -> str:
        """The PascalCase name written to results.json (``MetaworldPickPlace``)."""
        return "".join(p[:1].upper() + p[1:] for p in self.registry_name.split("_"))


_EASY = {
    "button-press": "press the button from the front",
    "button-press-topdown": "press the button down from the top",
    "button-press-topdown-wall": "press the button down from the top behind the wall",
    "button-press-wall": "press the button from the front behind the wall",
    "coffee-button": "press the button on the coffee machine",
    "dial-turn": "turn the dial",
    "door-close": "close the door",
    "door-lock": "lock the door by turning the lock",
    "door-open": "open the door",
    "door-unlock": "unlock the door by turning the lock",
    "drawer-close": "close the drawer",
    "drawer-open": "open the drawer",
    "faucet-close": "turn the faucet handle to close it",
    "faucet-open": "turn the faucet handle to open it",
    "handle-press": "press the handle down",
    "handle-press-side": "press the handle down from the side",
    "handle-pull": "pull the handle up",
    "handle-pull-side": "pull the handle up from the side",
    "lever-pull": "pull the lever up",
    "plate-slide": "slide the plate into the goal",
    "plate-slide-back": "slide the plate back out of the goal",
    "plate-slide-back-side": "slide the plate back sideways out of the goal",
    "plate-slide-side": "slide the plate sideways into the goal",
    "reach": "reach the goal position",
    "reach-wall": "reach the goal position over the wall",
    "window-close": "slide the window closed",
    "window-open": "slide the window open",
    "peg-unplug-side": "unplug the peg sideways",
}
_MEDIUM = {
    "basketball": "put the ball into the hoop",
    "bin-picking": "move the puck from one bin into the other",
    "box-close": "put the lid on the box",
    "coffee-pull": "pull the mug away from the coffee machine",
    "coffee-push": "push the mug under the coffee machine",
    "hammer": "hammer the nail into the wall",
    "peg-insert-side": "insert the peg into the hole from the side",
    "push-wall": "push the puck to the goal around the wall",
    "soccer": "kick the ball into the goal",
    "sweep": "sweep the puck off the table",
    "sweep-into": "sweep the puck into the hole",
}
_HARD = {
    "assembly": "put the ring onto the peg",
    "hand-insert": "insert the gripper into the hole",
    "pick-out-of-hole": "pick the peg out of the hole",
    "pick-place": "pick up the puck and place it at the goal",
    "push": "push the puck to the goal",
    "push-back": "push the puck backwards to the goal",
}
_VERY_HARD = {
    "shelf-place": "pick up the puck and place it on the shelf",
    "disassemble": "pick the ring off the peg",
    "stick-pull": "use the stick to pull the container",
    "stick-push": "use the stick to push the container",
    "pick-place-wall": "pick up the puck and place it at the goal behind the wall",
}

DIFFICULTIES = ("easy", "medium", "hard", "very_hard")
MT50: dict[str, TaskInfo] = {}
for _difficulty, _tasks in zip(DIFFICULTIES, (_EASY, _MEDIUM, _HARD, _VERY_HARD)):
    for _stem, _instruction in _tasks.items():
        _info = TaskInfo(f"{_stem}-v3", _difficulty, _instruction)
        MT50[_info.registry_name] = _info

#: Meta-World's MT10 set (``metaworld.MT10``), by registry name.
MT10: tuple[str, ...] = tuple(
    "metaworld_" + stem.replace("-", "_")
    for stem in (
        "reach", "push", "pick-place", "door-open", "drawer-open",
        "drawer-close", "button-press-topdown", "peg-insert-side", "window-open", "window-close",
    )
)  # fmt: skip


def tasks_of(selection: str) -> list[str]:
    """Registry names of ``mt10``, ``mt50``, a difficulty group, or a comma-separated list of names."""
    key = selection.strip().lower()
    if key == "mt10":
        return list(MT10)
    if key == "mt50":
        return list(MT50)
    if key in DIFFICULTIES:
        return [name for name, info in MT50.items() if info.difficulty == key]
    names = [s.strip() for s in selection.split(",") if s.strip()]
    unknown = [n for n in names if n not in MT50]
    if unknown or not names:
        import difflib

        hints = {n: difflib.get_close_matches(n, list(MT50), n=3) for n in unknown}
        raise ValueError(
            f"unknown Meta-World task(s) {unknown or selection!r}: did you mean {hints}? "
            f"Give mt10, mt50, one of {list(DIFFICULTIES)} or names from {sorted(MT50)}"
        )
    return names
