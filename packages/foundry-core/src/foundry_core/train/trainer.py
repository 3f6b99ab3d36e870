"""The one training loop: build → (train_step, evaluate, checkpoint)* → export → close.

The trainer knows nothing about model types: a model is an ``nn.Module`` with
``compute_loss(batch) -> (loss, metrics)`` and optional ``fsdp_block_types()``,
``flops_per_sample(batch)``, ``export_artifacts(out_dir)``. See ``docs/trainer.md``.
Tested by ``tests/test_train_*.py`` (accumulation, precision, resume, DDP/FSDP2, NaN guard, export, S3).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from foundry_core.config import to_dict
from foundry_core.data.base import batch_num_samples, batch_num_tokens, move_to_device
from foundry_core.data.mixer import Mixer
from foundry_core.distributed import (
    DistInfo,
    barrier,
    broadcast_object,
    check_plugins,
    check_same_on_all_ranks,
    close_distributed,
    config_digest,
    full_tensor,
    init_distributed,
    wrap_model,
)
from foundry_core.errors import ConfigError, FoundryError
from foundry_core.export import export_weights, rebuild_model
from foundry_core.registry import BuildContext, Registry
from foundry_core.run_config import RunConfig
from foundry_core.train import precision as prec
from foundry_core.train.checkpointer import Checkpointer
from foundry_core.train.ema import EMA
from foundry_core.train.metrics import MetricsWriter, peak_flops, plot_loss
from foundry_core.train.state import TrainState, capture_rng, restore_rng
from foundry_core.train.step_stats import StepStats

log = logging.getLogger("foundry")


class NonFiniteLossError(FoundryError):
    """The loss or the gradients became NaN/inf more often than ``train.skip_nonfinite`` allows."""


class Trainer:
    """``build()`` → ``fit()`` → ``close()``; ``train_step()``, ``evaluate()``, ``save()`` and ``export()``
    are the loop's parts, public for callbacks and tests."""

    def __init__(self, cfg: RunConfig, registry: Registry, pm: Any = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.pm = pm
        self.run_dir = run_dir_of(cfg)
        self.state = TrainState()
        self.stop_requested = False
        #: The signal that stopped training early (SIGINT/SIGTERM; SIGTERM when another rank was stopped).
        self.stop_signal: int | None = None
        self.checkpointer: Checkpointer | None = None
        self.metrics: MetricsWriter | None = None
        self.info: DistInfo | None = None
        self._old_handlers: dict[int, Any] = {}
        self._window: dict[str, float] = {}

    @property
    def last_checkpoint(self) -> Path | None:
        """The checkpoint written or resumed from last."""
        return self.checkpointer.last if self.checkpointer is not None else None

    # ------------------------------------------------------------------ build

    def build(self, resume: str | None = None, *, trust_checkpoint: bool = False) -> None:
        """Process group, model, wrapping, optimizer, data, sinks; then resume if asked.

        ``trust_checkpoint``: resume from a checkpoint without a checksum manifest (see ``Checkpointer.load``).
        """
        cfg = self.cfg
        if cfg.run.threads is not None:
            torch.set_num_threads(cfg.run.threads)
        self.info = info = init_distributed(cfg.distributed.strategy, cfg.distributed.backend, cfg.run.device)
        if self.pm is not None:
            check_plugins(self.pm)
        check_same_on_all_ranks("the resolved run config (digest)", config_digest(to_dict(cfg)))
        self._plan_batches()
        self._prepare_run_dir()
        ctx = BuildContext(self.registry, device=str(info.device))
        torch.manual_seed(cfg.run.seed)
        sources = self._build_sources(ctx)  # once: the mix, and the model's data metadata
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        self.checkpointer = Checkpointer(cfg, self.run_dir, info)
        self._build_model(dataclasses.replace(ctx, data_sources=sources))
        self._build_optimizer(ctx)
        self.callbacks = [
            self.registry.build("callback", node, ctx, where="train.callbacks")
            for node in cfg.train.callbacks
        ]
        self.mixer = self._build_mixer(sources)
        self.val_nodes = dict(cfg.data.val)
        torch.manual_seed(cfg.run.seed + 1 + info.rank)  # per-rank randomness (dropout, noise) from here on
        self.peak, self.peak_known, self.device_name = peak_flops(info.device)
        self.metrics = MetricsWriter(
            self.run_dir,
            list(cfg.train.metrics),
            enabled=info.is_main,
            run_name=cfg.run.name,
            config=to_dict(cfg),
        )
        if resume:
            self._resume(resume, trust_checkpoint)
        log.info(
            "rank %d/%d on %s: global batch %d = %d per device × %d ranks × %d accumulation; %s steps",
            info.rank,
            info.world_size,
            self.device_name,
            self.global_batch,
            self.per_device,
            info.world_size,
            self.accum,
            self.state.total_steps or "(set at the first step)",
        )

    def _plan_batches(self) -> None:
        """Global batch = per device × ranks × accumulation; the step count of a steps/samples budget."""
        t, world_size = self.cfg.train, self.info.world_size
        self.global_batch, self.per_device = t.batch.global_, t.batch.per_device_or_global
        denom = self.per_device * world_size
        if self.global_batch % denom or self.global_batch < denom:
            raise ConfigError(
                f"train.batch: global {self.global_batch} is not a multiple of per_device {self.per_device} × "
                f"{world_size} ranks = {denom}"
            )
        self.accum = self.global_batch // denom
        self.state.total_steps = self._planned_steps()

    def _planned_steps(self) -> int | None:
        """Steps of a steps/samples budget (from the config, also on resume); None for a token budget."""
        budget = self.cfg.train.budget
        if budget.steps is not None:
            return budget.steps
        if budget.samples is not None:
            return math.ceil(budget.samples / self.global_batch)
        return None

    def _build_model(self, ctx: BuildContext) -> None:
        t = self.cfg.train
        model = self.registry.build("model", self.cfg.model, ctx, where="model")
        if t.grad_checkpointing:
            enable_grad_checkpointing(model)
        self.model = prec.prepare_model(model, t.precision).to(self.info.device)
        self.checkpointer.keep_model_files(self.model, self.cfg.model)  # before sharding
        self.module = wrap_model(self.model, self.cfg.distributed.strategy, t.precision, self.info.mesh)
        if t.compile:
            self.module.compile()

    def _build_optimizer(self, ctx: BuildContext) -> None:
        t = self.cfg.train
        self.optimizer = self.registry.build("optimizer", t.optim, ctx, where="train.optim").build(self.model)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        self.schedule = self.registry.build("schedule", t.schedule, ctx, where="train.schedule")
        self.ema = EMA(self.model, t.ema.decay) if t.ema is not None else None

    def _build_sources(self, ctx: BuildContext) -> dict[str, Any]:
        """Every ``data.mix`` source by label (the name, + index when repeated), built once."""
        sources: dict[str, Any] = {}
        for i, entry in enumerate(self.cfg.data.mix):
            label = entry.label or entry.source.name
            if label in sources:
                label = f"{label}_{i}"
            sources[label] = self.registry.build(
                "data_source", entry.source, ctx, where=f"data.mix.{i}.source"
            )
        return sources

    def _build_mixer(self, sources: dict[str, Any]) -> Mixer:
        weights = dict(zip(sources, (entry.weight for entry in self.cfg.data.mix)))
        info = self.info
        mixer = Mixer(
            sources,
            weights,
            self.cfg.run.seed,
            batch_size=self.per_device,
            rank=info.rank,
            world_size=info.world_size,
        )
        #: Forward/backward passes per optimizer step: one per source with samples, per micro-step.
        self.backwards_per_step = self.accum * sum(1 for n in mixer.batch_sizes.values() if n)
        if len(sources) > 1:
            log.info(
                "every micro-step takes %s samples",
                ", ".join(f"{n} {k}" for k, n in mixer.batch_sizes.items()),
            )
        return mixer

    def _prepare_run_dir(self) -> None:
        """Create the run folder and prove it is writable before anything is built (all ranks fail together)."""
        error = None
        if self.info.is_main:
            probe = self.run_dir / ".foundry_write_test"
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                probe.write_text("")
                probe.unlink()
            except OSError as exc:
                error = (
                    f"run folder {self.run_dir}: cannot write there ({exc.strerror or exc}); set run.out_dir to a "
                    "writable folder"
                )
        error = broadcast_object(error)
        if error is not None:
            raise FoundryError(error)

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Train until the budget is spent, the data ends, or a stop signal arrives; then save + export."""
        self._install_signal_handlers()
        ran_out = False
        with self._progress() as show_progress:
            while not self._budget_done():
                out = self.train_step()
                if out is None:
                    ran_out = True
                    log.info(
                        "data ended at step %d (a source ran out on at least one rank); stopping",
                        self.state.step,
                    )
                    break
                if out.get("skipped"):
                    continue
                self._log_step(out)
                self._call_back("on_step_end", out)
                show_progress(out)
                if self.stop_requested:
                    self._save_on_stop()
                    return
                if self.checkpointer.due(self.state.step, self.state.samples, out["samples"]):
                    self.save()
        if not self.checkpointer.has(self.state.step):
            self.save()
        if not ran_out or self.state.step > 0:
            self.export()
        self._call_back("on_train_end")

    def train_step(self) -> dict[str, Any] | None:
        """One optimizer step over ``accum`` micro-batches; None when some rank ran out of data."""
        started = time.perf_counter()
        micro = self._next_micro_batches()
        if micro is None:
            return None
        data_time = time.perf_counter() - started
        stats, model_metrics = self._forward_backward(micro)
        grad_norm = self._clip_grad_norm()
        stats = stats.all_reduce(self._all_reduce)
        if stats.has_nonfinite or not math.isfinite(grad_norm):
            return self._skip_nonfinite(grad_norm)
        self._optimizer_step(stats)
        self.state.step += 1
        self.state.samples += int(stats.samples)
        self.state.tokens += int(stats.tokens)
        out = self._step_metrics(stats, grad_norm, model_metrics)
        out.update(step_time=time.perf_counter() - started, data_time=data_time)
        self._accumulate_window(out)
        return out

    def _next_micro_batches(self) -> list[tuple[str, dict[str, Any]]] | None:
        """The step's (label, batch) pairs: ``accum`` micro-steps, each a batch from every source of the
        mix; None when some rank ran out of data (all ranks agree)."""
        micro: list[tuple[str, dict[str, Any]]] = []
        ran_out = False
        for _ in range(self.accum):
            try:
                micro.extend(next(self.mixer))
            except StopIteration:
                ran_out = True
                break
        flags = torch.tensor([float(ran_out), float(self.stop_requested)])
        self._all_reduce(flags)  # one sync: data ended on a rank / a rank got a stop signal
        if flags[0] > 0:
            return None
        self.stop_requested = bool(flags[1] > 0)
        return micro

    def _forward_backward(
        self, micro: list[tuple[str, dict[str, Any]]]
    ) -> tuple[StepStats, dict[str, float]]:
        """Accumulate the gradient of the step's loss, the mean over its samples: each batch's loss is
        weighted by its share of them. Sum the statistics."""
        info, t = self.info, self.cfg.train
        stats = StepStats.zeros(self.mixer.labels, info.device)
        model_metrics: dict[str, float] = {}
        if not (self.module.training and self.model.training):  # a callback's evaluate() / generate()
            self.module.train()
        sizes = [batch_num_samples(batch) for _, batch in micro]
        for i, ((label, batch), samples) in enumerate(zip(micro, sizes)):
            tokens, share = batch_num_tokens(batch), samples / sum(sizes)
            batch = prec.cast_batch(move_to_device(batch, info.device), t.precision)
            with self._sync_context(last=i == len(micro) - 1), prec.autocast(t.precision, info.device):
                loss, extra = self.module(batch)
            (loss * share).backward()
            flops = samples * float(getattr(self.model, "flops_per_sample", _no_flops)(batch))
            stats.add(label, loss, share=share, samples=samples, tokens=tokens, flops=flops)
            for k, v in extra.items():
                model_metrics[k] = model_metrics.get(k, 0.0) + float(v) * share
        return stats, model_metrics

    def _optimizer_step(self, stats: StepStats) -> None:
        """Set the scheduled learning rate, step, clear the gradients, update the EMA."""
        if self.state.total_steps is None:  # token budget: fix the schedule length from the first step
            tokens = max(1.0, stats.tokens)
            self.state.total_steps = max(1, math.ceil(self.cfg.train.budget.tokens / tokens))
        lr_factor = self.schedule.factor(self.state.step, self.state.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()

    def _step_metrics(
        self, stats: StepStats, grad_norm: float, model_metrics: dict[str, float]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "loss": float(stats.loss) / self.info.world_size,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "samples": int(stats.samples),
            "tokens": int(stats.tokens),
            "flops": stats.flops,
            **{f"model/{k}": v for k, v in model_metrics.items()},
        }
        if len(stats.labels) > 1:
            out.update({f"loss/{label}": mean for label, mean in stats.label_means().items()})
            out.update({f"samples/{label}": int(n) for label, n in zip(stats.labels, stats.label_samples)})
        return out

    def _log_step(self, out: dict[str, Any]) -> None:
        """Metrics every ``log_every`` steps (and the last), validation every ``val_every``."""
        step, t = self.state.step, self.cfg.train
        if step % t.log_every == 0 or self._budget_done():
            self.metrics.log(step, self._window_metrics(out))
        if t.val_every and step % t.val_every == 0:
            self.metrics.log(step, self.evaluate())

    def _call_back(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            if hasattr(cb, hook):
                getattr(cb, hook)(self, *args)

    def _save_on_stop(self) -> None:
        self.stop_signal = self.stop_signal or signal.SIGTERM  # set by another rank's signal
        log.warning("stop signal received: saving a checkpoint at step %d and exiting", self.state.step)
        self.save()

    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``train.val_batches`` batches of each ``data.val`` source (perplexity for text)."""
        info, t = self.info, self.cfg.train
        results: dict[str, float] = {}
        ctx = BuildContext(self.registry, device=str(info.device))
        self.module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for label, node in self.val_nodes.items():
                source = self.registry.build("data_source", node, ctx, where=f"data.val.{label}")
                it = iter(
                    source.batches(
                        self.per_device, rank=info.rank, world_size=info.world_size, seed=self.cfg.run.seed
                    )
                )
                total = torch.zeros(3, dtype=torch.float64)  # loss sum, batches, is_text
                for _ in range(t.val_batches):
                    batch = next(it, None)
                    has = torch.tensor([float(batch is None)])
                    self._all_reduce(has)
                    if has[0] > 0:
                        break
                    batch = prec.cast_batch(move_to_device(batch, info.device), t.precision)
                    with prec.autocast(t.precision, info.device):
                        loss, _ = self.module(batch)
                    total += torch.tensor([float(loss), 1.0, float("labels" in batch)], dtype=torch.float64)
                self._all_reduce(total)
                if total[1] == 0:
                    raise FoundryError(f"data.val.{label}: the source yielded no batch")
                mean = float(total[0] / total[1])
                results[f"val/{label}/loss"] = mean
                if total[2] > 0:
                    results[f"val/{label}/perplexity"] = math.exp(min(mean, 50.0))
        self.module.train()
        log.info("step %d validation: %s", self.state.step, {k: round(v, 4) for k, v in results.items()})
        return results

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path:
        """Collective: checkpoint this step (weights, optimizer, EMA, counters, RNG, data cursors)."""
        rank_state = {
            "train": self.state.to_dict(),
            "rng": capture_rng(),
            "mixer": self.mixer.state_dict(),
            "world_size": self.info.world_size,
        }
        meta = {
            "samples": self.state.samples,
            "tokens": self.state.tokens,
            "ema": self.ema is not None,
            "plugins": self._plugin_versions(),
            "config": to_dict(self.cfg),  # compared with the config of a later --resume
        }
        return self.checkpointer.save(self.state.step, self._app_state(), rank_state, meta)

    def _app_state(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.module, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def _resume(self, resume: str, trust_checkpoint: bool) -> None:
        """Continue from ``resume`` ('latest', a folder, or a URL); a steps/samples budget stays the config's."""
        path = self.checkpointer.find(resume)
        if path is None:
            return
        app_state = self._app_state()
        rank_state, has_ema = self.checkpointer.load(path, app_state, trust_checkpoint=trust_checkpoint)
        set_state_dict(
            self.module,
            self.optimizer,
            model_state_dict=app_state["model"],
            optim_state_dict=app_state["optim"],
        )
        if self.ema is not None and has_ema:
            self.ema.load_state_dict(app_state["ema"])
        elif self.ema is not None:  # EMA switched on at resume: start it from the loaded weights
            self.ema = EMA(self.model, self.cfg.train.ema.decay)
        planned = self.state.total_steps
        self.state = TrainState.from_dict(rank_state["train"])
        if planned is not None:  # the budget may have been raised for this invocation
            self.state.total_steps = planned
        self.mixer.load_state_dict(rank_state["mixer"])
        self._restore_rng(rank_state)
        log.info("resumed from %s (step %d, %d samples)", path, self.state.step, self.state.samples)

    def _restore_rng(self, rank_state: dict[str, Any]) -> None:
        """The saved RNG streams on the same world size; reseeded per rank on another."""
        world_size = self.info.world_size
        if rank_state["world_size"] == world_size:
            restore_rng(rank_state["rng"])
            return
        log.warning(
            "resuming a %d-rank checkpoint on %d ranks: weights, optimizer, counters and data cursors are "
            "restored; per-rank RNG streams are reseeded",
            rank_state["world_size"],
            world_size,
        )
        torch.manual_seed(self.cfg.run.seed + 7919 * self.state.step + self.info.rank)

    # ------------------------------------------------------------------ export

    def export(self, out_dir: Path | None = None) -> Path:
        """Collective: gather full weights (EMA if enabled), rebuild the model on rank 0, write ``export/``
        (or ``out_dir``: an export of the current weights during training, e.g. for closed-loop evaluation)."""
        weights = _full_weights(self.module)
        use_ema = self.ema is not None and self.cfg.train.ema.use_for_export
        ema = (
            {n: full_tensor(t).detach().cpu() for n, t in self.ema.state_dict().items()} if use_ema else None
        )
        out = Path(out_dir) if out_dir is not None else self.run_dir / "export"
        if self.info.is_main:
            meta = {
                "step": self.state.step,
                "samples": self.state.samples,
                "tokens": self.state.tokens,
                "plugins": self._plugin_versions(),
                "ema": use_ema,
            }
            fresh = rebuild_model(self.registry, self.cfg.model, data_sources=self.mixer.sources)
            export_weights(fresh, self.cfg.model, weights, out, ema=ema, extra_meta=meta)
            if out_dir is None:
                self.checkpointer.mirror(out, "export")
            log.info("exported the model to %s", out)
        barrier()
        return out

    # ------------------------------------------------------------------ close

    def close(self) -> None:
        """Flush sinks, wait for uploads (reporting failures), plot the loss curve, restore signals."""
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}
        failures: list[str] = []
        if self.metrics is not None:
            self.metrics.close()
        if self.info is not None and self.info.is_main:
            if self.checkpointer is not None:
                failures = self.checkpointer.close()
            if self.metrics is not None and self.metrics.path.is_file():
                plot_loss(self.metrics.path, self.run_dir / "loss.png")
        if self.info is not None:
            close_distributed(self.info)
        if failures:
            raise FoundryError("remote sync failed for:\n  " + "\n  ".join(failures))

    # ------------------------------------------------------------------ helpers

    def _budget_done(self) -> bool:
        b = self.cfg.train.budget
        if b.tokens is not None:
            return self.state.tokens >= b.tokens
        return self.state.step >= (self.state.total_steps or 0)

    def _skip_nonfinite(self, grad_norm: float) -> dict[str, Any]:
        """Drop this step's gradients, or stop when more steps were non-finite than allowed."""
        self.optimizer.zero_grad(set_to_none=True)
        self.state.nonfinite_skipped += 1
        where = f"step {self.state.step + 1}"
        if self.state.nonfinite_skipped > self.cfg.train.skip_nonfinite:
            last = self.last_checkpoint or "none saved yet"
            raise NonFiniteLossError(
                f"non-finite loss or gradient at {where} (grad norm {grad_norm}); stopping. The last good "
                f"checkpoint is {last}. Allow skipping with train.skip_nonfinite=N "
                f"({self.state.nonfinite_skipped} non-finite step(s) so far)."
            )
        log.warning(
            "non-finite loss/gradient at %s: update skipped (%d/%d allowed)",
            where,
            self.state.nonfinite_skipped,
            self.cfg.train.skip_nonfinite,
        )
        return {"skipped": True}

    def _clip_grad_norm(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        max_norm = self.cfg.train.grad_clip if self.cfg.train.grad_clip else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(full_tensor(norm))

    def _sync_context(self, last: bool) -> Any:
        """Skip the gradient all-reduce on all but the last backward of a step."""
        if self.cfg.distributed.strategy == "ddp" and not last:
            return self.module.no_sync()
        if self.cfg.distributed.strategy == "fsdp2" and self.backwards_per_step > 1:
            self.module.set_requires_gradient_sync(last)
        return nullcontext()

    def _all_reduce(self, t: torch.Tensor) -> None:
        if self.info.world_size > 1:
            backend_tensor = t.to(self.info.device) if self.info.device.type == "cuda" else t
            dist.all_reduce(backend_tensor)
            if backend_tensor is not t:
                t.copy_(backend_tensor.cpu())

    def _accumulate_window(self, out: dict[str, Any]) -> None:
        w = self._window
        for key in ("step_time", "data_time", "samples", "tokens", "flops"):
            w[key] = w.get(key, 0.0) + out[key]

    def _window_metrics(self, out: dict[str, Any]) -> dict[str, Any]:
        w, self._window = self._window, {}
        elapsed = max(w.get("step_time", 0.0), 1e-9)
        m = {k: v for k, v in out.items() if k not in ("samples", "tokens", "flops", "data_time")}
        m.update(
            samples_seen=self.state.samples,
            tokens_seen=self.state.tokens,
            samples_per_s=w.get("samples", 0.0) / elapsed,
            tokens_per_s=w.get("tokens", 0.0) / elapsed,
            data_wait_share=w.get("data_time", 0.0) / elapsed,
            mfu=(w.get("flops", 0.0) / elapsed / (self.peak * self.info.world_size))
            if self.peak_known and self.peak
            else None,
        )
        if not self.peak_known:
            m["mfu_unknown_device"] = self.device_name
        return m

    def _plugin_versions(self) -> dict[str, str]:
        if self.pm is None:
            return {}
        from foundry_core.plugins import plugin_infos

        return {i.name: i.version for i in plugin_infos(self.pm) if not i.error}

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self.stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_requested = True
            self.stop_signal = signum

        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old_handlers[sig] = signal.signal(sig, request_stop)

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A progress bar on rank 0 (``train.progress``); yields the function that advances it."""
        if not (self.cfg.train.progress and self.info.is_main):
            yield lambda out: None
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
            refresh_per_second=2,  # a redraw thread competes with the training thread on small CPUs
        )
        task = progress.add_task(
            self.cfg.run.name, total=self.state.total_steps, completed=self.state.step, loss=float("nan")
        )

        def advance(out: dict[str, Any]) -> None:
            progress.update(task, completed=self.state.step, total=self.state.total_steps, loss=out["loss"])

        progress.start()
        try:
            yield advance
        finally:
            progress.stop()


def run_dir_of(cfg: RunConfig) -> Path:
    """``run.out_dir``, or ``runs/<run.name>``."""
    return Path(cfg.run.out_dir or f"runs/{cfg.run.name}")


def _full_weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Collective under DDP/FSDP: every parameter and buffer, full and on the CPU, by the model's own names."""
    if dist.is_initialized():
        full = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        full = module.state_dict()
    return {k.removeprefix("model."): v for k, v in full.items()}


def _no_flops(batch: dict[str, Any]) -> float:
    return 0.0


def enable_grad_checkpointing(model: torch.nn.Module) -> None:
    """Use the model's own switch when it has one, else checkpoint every FSDP block's forward."""
    for name in ("gradient_checkpointing_enable", "set_gradient_checkpointing"):
        fn = getattr(model, name, None)
        if callable(fn):
            fn() if name == "gradient_checkpointing_enable" else fn(True)
            return
    from torch.utils.checkpoint import checkpoint

    from foundry_core.distributed import block_modules

    blocks = block_modules(model)
    if not blocks:
        raise ConfigError(
            f"train.grad_checkpointing: {type(model).__name__} has no gradient_checkpointing_enable() and "
            "declares no fsdp_block_types() to checkpoint"
        )
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
