"""Hook specifications: the complete list of things a Foundry plugin may provide.

A plugin is a module (usually ``<pkg>/plugin.py``) named by an entry point in the group
:data:`ENTRY_POINT_GROUP`, whose functions carry :data:`hookimpl`. It must stay import-light:
register *strings* (``"pkg.module:Class"``) so that torch, transformers or drake are imported only
when a component is built. Every registration hook takes the single parameter ``register``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    import click

PROJECT = "foundry"
ENTRY_POINT_GROUP = "foundry.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """Callback handed to every ``register_*`` hook.

    Args:
        name: short snake_case name, unique within the kind (``flow_matching``).
        target: the component class, or preferably ``"package.module:Attr"`` imported on first use.
        description: one line shown by ``foundry components``.
    """

    def __call__(self, name: str, target: object | str, *, description: str = "") -> None: ...


@hookspec
def register_models(register: Register) -> None:
    """Add trainable models under the ``model`` kind (``transformer``, ``hf_causal_lm``, ``vlm``, ``vla``).

    A model class has a nested ``Config`` dataclass, a ``from_config(cfg, ctx)`` classmethod and
    ``compute_loss(batch) -> (loss, metrics)``; see :class:`foundry_core.interfaces.TrainableModel`.
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Add observation encoders (image, proprioception) and vision projectors under ``encoder``."""


@hookspec
def register_backbones(register: Register) -> None:
    """Add backbones under ``backbone``: modules that turn (images, prompt) into conditioning tokens.

    See :class:`foundry_core.interfaces.Backbone`.
    """


@hookspec
def register_action_experts(register: Register) -> None:
    """Add action heads (flow matching, diffusion, regression) under ``action_expert``."""


@hookspec
def register_data_sources(register: Register) -> None:
    """Add data sources under ``data_source`` (WebDataset shards, Zarr robot episodes, ...).

    See :class:`foundry_core.interfaces.DataSource`.
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Add simulated tasks under ``task``; see :class:`foundry_core.interfaces.Task`."""


@hookspec
def register_converters(register: Register) -> None:
    """Add robot-data converters under ``converter`` (``foundry data convert --format NAME``).

    A converter is a module or object with ``detect(src) -> bool``, ``plan(src, options) -> Plan`` and
    ``load(unit) -> list[Episode]`` (see :mod:`foundry_action.convert`); register its module path
    (``"my_lab.convert.hdf5"``) so it is imported only when a conversion runs.
    """


@hookspec
def register_callbacks(register: Register) -> None:
    """Add trainer callbacks under ``callback``; active only when named in a run config."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Add optimizers under ``optimizer`` (``foundry components optimizer`` lists them)."""


@hookspec
def register_schedules(register: Register) -> None:
    """Add learning-rate schedules under ``schedule`` (``cosine``, ``constant``, ``wsd``)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Attach click commands or groups to the ``foundry`` command line.

    Called once, the first time the command table is read. Put commands under a group named after
    the plugin's area (``foundry data convert``); a command that shadows a built-in is refused.
    Import heavy modules inside the command body, never at module level.
    """

