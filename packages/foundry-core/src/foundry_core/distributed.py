"""Process groups, rank-0 logging and model wrapping (none / DDP / FSDP2) on top of torch.distributed.

Launch with ``torchrun`` (single node or multi-node rendezvous); nothing here spawns processes.
``init_distributed()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and picks gloo on
CPU and nccl on CUDA. Tested by ``tests/test_train_distributed.py`` (2 processes, gloo).
"""

from __future__ import annotations

import atexit
import datetime
import functools
import hashlib
import json
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from foundry_core.errors import ConfigError, FoundryError

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

log = logging.getLogger("foundry")
PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass
class DistInfo:
    """Where this process sits: rank, world size, device, and whether we created the process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False
    mesh: DeviceMesh | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def initialized(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("run.device: 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(device)


def init_distributed(strategy: str = "none", backend: str = "auto", device: str = "auto") -> DistInfo:
    """Join (or start) the process group for ``strategy``.

    Under torchrun the group is initialised from its environment. Outside torchrun, ``none`` runs
    without a group and ``ddp``/``fsdp2`` get a private single-process group (world size 1), so the
    same code path runs everywhere. An already initialised group is reused (and not destroyed later).
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = _pick_device(device, local_rank)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            # Kept for the life of the process (several runs may follow each other under one torchrun;
            # re-initialising the default group on torchrun's store is not supported).
            if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
                store = _fresh_agent_store(rank, world_size, PROCESS_GROUP_TIMEOUT)
                dist.init_process_group(
                    backend=backend,
                    store=store,
                    rank=rank,
                    world_size=world_size,
                    timeout=PROCESS_GROUP_TIMEOUT,
                )
            else:
                dist.init_process_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)
            atexit.register(_destroy_at_exit)
        elif strategy != "none":
            store = tempfile.NamedTemporaryFile(prefix="foundry_pg_", delete=False)
            store.close()
            os.unlink(store.name)
            dist.init_process_group(backend=backend, init_method=f"file://{store.name}", rank=0, world_size=1)
            owns = True
    if dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns)
    else:
        info = DistInfo(0, 1, 0, dev, False)
    if strategy == "none" and info.world_size > 1:
        raise ConfigError(
            f"distributed.strategy is 'none' but {info.world_size} processes were launched; use ddp or fsdp2"
        )
    if strategy == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh

        info.mesh = init_device_mesh(dev.type, (info.world_size,))
    return info


GENERATION_KEY = "foundry/process_group_generation"


def _fresh_agent_store(rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, namespaced by a generation that every rank of this attempt agrees on.

    torchrun (c10d rendezvous, the default) keeps ONE store for the whole job and hands it to every
    restart. ``init_process_group`` writes its rendezvous keys (gloo's listening addresses, NCCL's
    unique id) without a per-attempt prefix, so after ``--max-restarts`` a rank can read the address of
    a rank of the killed attempt: "connection refused", or both ranks hang in connect. Torch's own
    ``TORCHELASTIC_RESTART_COUNT`` is counted per node, so it is no safe prefix. Rank 0 draws a fresh
    generation and keeps publishing it until every other rank has acknowledged it; every other rank
    first deletes the key, so the only value it can then read is the one this attempt's rank 0 wrote
    (the ranks of a killed attempt are gone before torchrun restarts).
    """
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
    )
    if rank == 0:
        generation = secrets.token_hex(8)
        acks = [f"{GENERATION_KEY}/{generation}/ack/{r}" for r in range(1, world_size)]
        deadline = time.monotonic() + timeout.total_seconds()
        store.set(GENERATION_KEY, generation)
        while acks and not store.check(acks):
            if time.monotonic() > deadline:
                missing = [k.rsplit("/", 1)[1] for k in acks if not store.check([k])]
                raise FoundryError(
                    f"ranks {', '.join(missing)} did not join the process group within {timeout}"
                )
            time.sleep(0.05)
            store.set(GENERATION_KEY, generation)  # again: a rank may have deleted it after we wrote it
    else:
        store.delete_key(GENERATION_KEY)
        store.wait([GENERATION_KEY], timeout)
        generation = store.get(GENERATION_KEY).decode()
        store.set(f"{GENERATION_KEY}/{generation}/ack/{rank}", "1")
    return dist.PrefixStore(f"foundry/process_group/{generation}", store)


def _destroy_at_exit() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def close_distributed(info: DistInfo) -> None:
    """Destroy the process group if ``init_distributed`` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def log0(msg: str, *args: Any, level: int = logging.INFO) -> None:
    """Log on rank 0 only."""
    if is_main():
        log.log(level, msg, *args)


print0 = log0  # library code logs; the name mirrors the common ``print0`` idiom


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def check_same_on_all_ranks(what: str, value: Any) -> None:
    """All-gather ``value`` and fail on every rank (so none hangs) when the ranks disagree."""
    values = all_gather_object(value)
    if any(v != values[0] for v in values):
        diff = {r: v for r, v in enumerate(values) if v != values[0]}
        raise FoundryError(f"ranks disagree on {what}: rank 0 has {values[0]!r}, others have {diff!r}")


def check_plugins(pm: Any) -> None:
    """CONVENTIONS §4: every rank must have loaded the same plugins at the same versions."""
    from foundry_core.plugins import plugin_infos

    names = sorted(f"{i.name}@{i.version}" for i in plugin_infos(pm) if not i.error)
    check_same_on_all_ranks("the installed plugin set", names)


def config_digest(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- wrapping


class LossModule(nn.Module):
    """Makes ``compute_loss`` the module's ``forward`` so DDP/FSDP hooks (grad sync, unshard) run.

    Every strategy wraps the model in this module, so checkpoint keys (``model.<param>``) are the same
    whatever the strategy.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> Any:
        return self.model.compute_loss(batch)


def block_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """Block classes declared anywhere in the tree: every submodule's ``fsdp_block_types()`` and the
    ``_no_split_modules`` class names of Hugging Face models (so a backbone nested in a VLA counts)."""
    types: set[type[nn.Module]] = set()
    hf_names: set[str] = set()
    for module in model.modules():
        declared = getattr(module, "fsdp_block_types", None)
        if callable(declared):
            types.update(declared())
        hf_names.update(getattr(module, "_no_split_modules", None) or ())
    if hf_names:
        types.update(type(m) for m in model.modules() if type(m).__name__ in hf_names)
    return tuple(sorted(types, key=lambda t: t.__qualname__))


def block_modules(model: nn.Module) -> list[nn.Module]:
    """Every submodule (not the root) whose type is a declared block type (see :func:`block_types`)."""
    types = block_types(model)
    if not types:
        return []
    return [m for m in model.modules() if isinstance(m, types) and m is not model]


def wrap_model(model: nn.Module, strategy: str, precision: str, mesh: DeviceMesh | None = None) -> nn.Module:
    """Wrap ``model`` in :class:`LossModule`, then DDP or FSDP2 (``fully_shard`` per block, then root).

    Precision is handled the same way for every strategy (see ``train/precision.py``): parameters
    stay fp32 for ``fp32``/``bf16`` (autocast does the casting), and are bf16 for ``bf16-pure``.
    """
    del precision  # parameter dtype was already set; wrapping never changes it
    wrapped = LossModule(model)
    if strategy == "none":
        return wrapped
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        device_ids = [next(model.parameters()).device.index] if next(model.parameters()).is_cuda else None
        return DDP(wrapped, device_ids=device_ids, find_unused_parameters=_has_unused(model))
    if strategy == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        if mesh is None:
            raise FoundryError("fsdp2 needs a device mesh (init_distributed(strategy='fsdp2'))")
        blocks = block_modules(model)
        if not blocks:
            log0(
                "fsdp2: %s declares no fsdp_block_types(); the whole model is one FSDP unit",
                type(model).__name__,
            )
        for block in reversed(blocks):
            fully_shard(block, mesh=mesh)
        fully_shard(wrapped, mesh=mesh)
        return wrapped
    raise ConfigError(f"distributed.strategy: unknown strategy {strategy!r}")


def _has_unused(model: nn.Module) -> bool:
    """Co-trained models leave parameters unused by some modalities; a model may opt out for speed."""
    return bool(getattr(model, "ddp_find_unused_parameters", True))


def unwrap(module: nn.Module) -> nn.Module:
    """The user's model inside DDP / LossModule."""
    inner = getattr(module, "module", module)
    return getattr(inner, "model", inner)


@functools.cache
def _dtensor_cls() -> type:
    from torch.distributed.tensor import DTensor

    return DTensor


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly sharded) DTensor; a collective when sharded."""
    if isinstance(t, _dtensor_cls()):
        return t.full_tensor()
    return t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    if isinstance(t, _dtensor_cls()):
        return t.to_local()
    return t
