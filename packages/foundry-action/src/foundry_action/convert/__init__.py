"""Converters from other robot-data layouts into an episode store (``foundry data convert``).

A converter is a component of kind ``converter`` (hook ``register_converters``; the first-party ones
are registered by foundry-action's plugin, a lab adds its own format the same way): a module (or
object) with ``detect(src) -> bool``, ``plan(src, options) -> Plan`` (store layout and a list of
picklable work units) and ``load(unit) -> list[Episode]`` (runs in worker processes or Ray tasks). The main process appends episodes in unit order, so the result is deterministic whatever
the parallelism. Output goes to ``<dst>.partial`` and is renamed to ``<dst>`` only when complete
(with its statistics), so an interrupted conversion never leaves a store that looks complete; an
existing ``<dst>`` is replaced only with ``overwrite`` and only if it is an episode store and not the
source (``foundry_action.ownership``).
Test: ``uv run pytest packages/foundry-action/tests/test_action_convert.py``.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from foundry_core.errors import ComponentError, DataError

if TYPE_CHECKING:
    from foundry_action.frame_codecs import FrameEncoding
    from foundry_core.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Episode:
    """One converted episode: per-step arrays (store keys) and metadata for ``append_episode``."""

    arrays: dict[str, Any]
    task: str = ""
    instruction: str | list[str] = ""
    success: bool | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """What a converter will write: the store layout and the work units (each yields >= 1 episode)."""

    fps: float
    fields: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    cameras: dict[str, tuple[int, int]]
    units: list[Any]
    semantics: dict[str, str] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    unit_label: str = "episodes"


@dataclass
class ConvertOptions:
    """User options shared by all converters (``fps``/``task``/``instruction`` fill gaps in the source)."""

    fps: float | None = None
    task: str | None = None
    instruction: str | None = None
    #: Cameras to keep, by name (converters listing "cameras" in their OPTIONS, e.g. lbm_spartan); None = all.
    cameras: list[str] | None = None
    #: wds (OPTIONS "keep_windows"): one episode per window even when the metadata places it in its episode.
    keep_windows: bool = False


@dataclass
class Summary:
    format: str
    dst: Path
    episodes: int
    steps: int
    fields: dict[str, tuple[int, ...]]
    cameras: dict[str, tuple[int, int]]
    seconds: float
    bytes_on_disk: int

    def lines(self) -> list[str]:
        return [
            f"converted {self.format} -> {self.dst}",
            f"  episodes: {self.episodes}   steps: {self.steps}   time: {self.seconds:.1f} s   "
            f"size: {self.bytes_on_disk / 1e6:.1f} MB",
            f"  fields ({len(self.fields)}): " + ", ".join(f"{k}{list(v)}" for k, v in list(self.fields.items())[:8])
            + (", ..." if len(self.fields) > 8 else ""),
            f"  cameras ({len(self.cameras)}): " + ", ".join(f"{k} {h}x{w}" for k, (h, w) in self.cameras.items()),
        ]


def _registry(registry: Registry | None) -> Registry:
    from foundry_core.plugins import get_registry

    return registry if registry is not None else get_registry()


def _module(fmt: str, registry: Registry | None = None) -> Any:
    """The converter registered as ``fmt`` (unknown names fail with the registered ones)."""
    try:
        return _registry(registry).get("converter", fmt).load()
    except ComponentError as exc:
        raise DataError(f"source format: {exc}") from None


def detect_format(src: str | Path, registry: Registry | None = None) -> str:
    """Name of the one registered converter that recognises ``src`` (raises DataError otherwise)."""
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: no such file or directory")
    specs = _registry(registry).specs("converter")
    found = [spec.name for spec in specs if spec.load().detect(src)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(f"{src}: recognised by several converters ({', '.join(found)}); use --format")
    expected = "; ".join(f"{spec.name}: {spec.description}" for spec in specs)
    raise DataError(f"{src}: unrecognised source; registered converters: {expected}; use --format")


def check_format(src: Path, fmt: str, registry: Registry | None = None) -> None:
    """Raise when ``src`` is not what converter ``fmt`` reads (a wrong ``--format``), naming what it looks like."""
    if _module(fmt, registry).detect(src):
        return
    specs = _registry(registry).specs("converter")
    expects = next((spec.description for spec in specs if spec.name == fmt), fmt)
    others = [spec.name for spec in specs if spec.name != fmt and spec.load().detect(src)]
    hint = f"it looks like {others[0]} (try --format {others[0]} or leave --format out)" if others else "no format matches it"
    raise DataError(f"{src}: --format {fmt} expects {expects}; {hint}")


def _load_unit(converter: Any, unit: Any) -> list[Episode]:
    """Runs in workers: ``converter`` is a module name (imported there) or a picklable converter object."""
    if isinstance(converter, str):
        converter = importlib.import_module(converter)
    return converter.load(unit)


def _run_local(converter: Any, units: Sequence[Any], workers: int) -> Iterator[list[Episode]]:
    if workers <= 1:
        for unit in units:
            yield _load_unit(converter, unit)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # never fork a process that holds Zarr/torch threads
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_load_unit, converter, unit) for unit in units[: 2 * workers]]
        submitted = len(futures)
        for i in range(len(units)):
            result = futures[i].result()
            futures[i] = None  # type: ignore[call-overload]  # free the episode once written
            if submitted < len(units):
                futures.append(pool.submit(_load_unit, converter, units[submitted]))
                submitted += 1
            yield result


def _run_ray(converter: Any, units: Sequence[Any], workers: int) -> Iterator[list[Episode]]:
    try:
        import ray
    except ImportError as exc:
        raise DataError("--ray needs the 'ray' package: pip install 'foundry-robotics-action[ray]' (in a clone: pip install './packages/foundry-action[ray]')") from exc
    if not ray.is_initialized():
        ray.init(address="auto" if _ray_address_set() else None, log_to_driver=False)
    remote = ray.remote(_load_unit)
    window = max(2, 2 * max(workers, 1))
    refs = [remote.remote(converter, u) for u in units[:window]]
    submitted = len(refs)
    for i in range(len(units)):
        result = ray.get(refs[i])
        refs[i] = None
        if submitted < len(units):
            refs.append(remote.remote(converter, units[submitted]))
            submitted += 1
        yield result


def _ray_address_set() -> bool:
    import os

    return bool(os.environ.get("RAY_ADDRESS"))


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    fmt: str | None = None,
    workers: int = 1,
    use_ray: bool = False,
    options: ConvertOptions | None = None,
    overwrite: bool = False,
    compute_stats: bool = True,
    progress: Callable[[int, int], None] | None = None,
    registry: Registry | None = None,
    frames: FrameEncoding | None = None,
) -> Summary:
    """Convert ``src`` into a new store at ``dst``; ``progress(done_units, total_units)`` is called as it goes.

    ``frames``: how the new store keeps camera frames (default lossless; e.g. ``FrameEncoding.parse("jpeg", 90)``).
    """
    from foundry_action.normalization import NormStats
    from foundry_action.ownership import check_destination, install, prepare_partial
    from foundry_action.store import EpisodeWriter, open_store

    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    if src.name in ("", ".", ".."):
        src = src.resolve()  # names the task and provenance
    if fmt is None:
        fmt = detect_format(src, registry)
    elif src.exists():
        check_format(src, fmt, registry)
    module = _module(fmt, registry)
    options = options or ConvertOptions()
    for name in ("cameras", "keep_windows"):  # options only some converters read (their OPTIONS)
        if getattr(options, name) and name not in getattr(module, "OPTIONS", ()):
            raise DataError(f"option {name} does not apply to {fmt} sources")
    check_destination(dst, sources=[src], overwrite=overwrite)
    partial = prepare_partial(dst)
    plan: Plan = module.plan(src, options)
    if not plan.units:
        raise DataError(f"{src}: no {plan.unit_label} to convert")
    attrs = {"source_format": fmt, "source_path": str(src), **plan.attrs}
    runner = _run_ray if use_ray else _run_local
    try:
        with EpisodeWriter(
            partial, fps=plan.fps, fields=plan.fields, dtypes=plan.dtypes, cameras=plan.cameras,
            semantics=plan.semantics, attrs=attrs, mode="w", frames=frames,
        ) as writer:
            ref = module.__name__ if isinstance(module, ModuleType) else module  # what workers can import
            for done, episodes in enumerate(runner(ref, plan.units, workers), start=1):
                for ep in episodes:
                    writer.append_episode(
                        ep.arrays, task=ep.task, instruction=ep.instruction, success=ep.success, source=ep.source,
                        extra=ep.extra,
                    )
                if progress is not None:
                    progress(done, len(plan.units))
        store = open_store(partial)
        if compute_stats:
            stats = NormStats.compute(store)
            stats.source["path"] = str(dst)  # where the store will live, not the temporary name
            stats.save(partial / "stats")
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)  # never leave something that could pass for a store
        if isinstance(exc, OSError):
            raise DataError(
                f"{exc.filename or dst}: {exc.strerror or exc} (while converting {src} into {dst})"
            ) from exc
        raise
    install(partial, dst)
    size = sum(os.path.getsize(p) for p in Path(dst).rglob("*") if p.is_file())
    return Summary(fmt, dst, len(store), store.num_steps, store.fields, store.cameras, time.perf_counter() - t0, size)
