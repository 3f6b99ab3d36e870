"""The one training loop: build → (train_step, evaluate, save)* → export → close.

The trainer knows nothing about model types: a model is an ``nn.Module`` with
``compute_loss(batch) -> (loss, metrics)`` and optional ``fsdp_block_types()``,
``flops_per_sample(batch)``, ``export_artifacts(out_dir)``. See ``docs/trainer.md``.
Tested by ``tests/test_train_*.py`` (accumulation, precision, resume, DDP/FSDP2, NaN guard, export, S3).
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import threading
import time
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
    check_plugins,
    check_same_on_all_ranks,
    close_distributed,
    config_digest,
    full_tensor,
    init_distributed,
    wrap_model,
)
from foundry_core.errors import ConfigError, FoundryError
from foundry_core.registry import BuildContext, Registry
from foundry_core.run_config import RunConfig
from foundry_core.train import checkpoint as ckpt
from foundry_core.train import precision as prec
from foundry_core.train.checkpoint_integrity import UntrustedCheckpointError, stored_shapes, verify_checkpoint
from foundry_core.train.ema import EMA
from foundry_core.train.metrics import MetricsWriter, peak_flops, plot_loss
from foundry_core.train.remote import RemoteSync, download_checkpoint
from foundry_core.train.resume_check import check_resume
from foundry_core.train.state import TrainState, capture_rng, restore_rng

log = logging.getLogger("foundry")


class NonFiniteLossError(FoundryError):
    """The loss or the gradients became NaN/inf more often than ``train.skip_nonfinite`` allows."""


class Trainer:
    def __init__(
        self, cfg: RunConfig, raw: dict[str, Any], registry: Registry, run_dir: Path, pm: Any = None
    ) -> None:
        self.cfg = cfg
        self.raw = raw
        self.registry = registry
        self.pm = pm
        self.run_dir = run_dir
        self.ckpt_root = run_dir / "checkpoints"
        self.state = TrainState()
        self.stop_requested = False
        #: The signal that stopped training early (SIGINT/SIGTERM; SIGTERM when another rank was stopped).
        self.stop_signal: int | None = None
        self.last_checkpoint: Path | None = None
        self.remote: RemoteSync | None = None
        self.metrics: MetricsWriter | None = None
        self._old_handlers: dict[int, Any] = {}
        self._window: dict[str, float] = {}
        self.info: DistInfo | None = None

    # ------------------------------------------------------------------ build

    def build(self, resume: str | None = None, *, trust_checkpoint: bool = False) -> None:
        """Process group, model, wrapping, optimizer, data, sinks; then resume if asked.

        ``trust_checkpoint``: resume from a checkpoint without a checksum manifest (see ``_resume``).
        """
        cfg, t = self.cfg, self.cfg.train
        self.info = info = init_distributed(cfg.distributed.strategy, cfg.distributed.backend, cfg.run.device)
        if self.pm is not None:
            check_plugins(self.pm)
        check_same_on_all_ranks("the resolved run config (digest)", config_digest(self.raw))
        self.global_batch, self.per_device = t.batch.global_, t.batch.per_device_or_global
        denom = self.per_device * info.world_size
        if self.global_batch % denom or self.global_batch < denom:
            raise ConfigError(
                f"train.batch: global {self.global_batch} is not a multiple of per_device {self.per_device} × "
                f"{info.world_size} ranks = {denom}"
            )
        self.accum = self.global_batch // denom
        budget = t.budget
        if budget.steps is not None:
            self.state.total_steps = budget.steps
        elif budget.samples is not None:
            self.state.total_steps = math.ceil(budget.samples / self.global_batch)

        self._prepare_run_dir()
        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        ctx = BuildContext(self.registry, device=str(info.device))
        model = self.registry.build("model", cfg.model, ctx, where="model")
        if t.grad_checkpointing:
            enable_grad_checkpointing(model)
        model = prec.prepare_model(model, t.precision).to(info.device)
        self.model = model
        self.module = wrap_model(model, cfg.distributed.strategy, t.precision, info.mesh)
        if t.compile:
            self.module.compile()
        self.optimizer = self.registry.build("optimizer", t.optim, ctx, where="train.optim").build(model)
        for group in self.optimizer.param_groups:
            group["base_lr"] = group["lr"]
        self.schedule = self.registry.build("schedule", t.schedule, ctx, where="train.schedule")
        self.ema = EMA(model, t.ema.decay) if t.ema is not None else None
        self.callbacks = [
            self.registry.build("callback", node, ctx, where="train.callbacks") for node in t.callbacks
        ]

        sources, weights = {}, {}
        for i, entry in enumerate(cfg.data.mix):
            label = entry.label or entry.source.name
            if label in sources:
                label = f"{label}_{i}"
            sources[label] = self.registry.build(
                "data_source", entry.source, ctx, where=f"data.mix.{i}.source"
            )
            weights[label] = entry.weight
        self.mixer = Mixer(
            sources,
            weights,
            cfg.run.seed,
            batch_size=self.per_device,
            rank=info.rank,
            world_size=info.world_size,
        )
        self.val_nodes = dict(cfg.data.val)

        torch.manual_seed(cfg.run.seed + 1 + info.rank)  # per-rank randomness (dropout, noise) from here on
        self.peak, self.peak_known, self.device_name = peak_flops(info.device)
        self.metrics = MetricsWriter(
            self.run_dir, list(t.metrics), enabled=info.is_main, run_name=cfg.run.name, config=self.raw
        )
        if cfg.run.remote_dir and info.is_main:
            self.remote = RemoteSync(
                cfg.run.remote_dir, retries=cfg.run.remote_retries, keep_last=t.checkpoint.keep_last
            )
        if resume:
            planned = self.state.total_steps
            self._resume(resume, trust_checkpoint)
            if planned is not None:  # steps/samples budgets come from the config (it may have been raised)
                self.state.total_steps = planned
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
        error = _broadcast(error)
        if error is not None:
            raise FoundryError(error)

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        """Train until the budget is spent, the data ends, or a stop signal arrives; then save + export."""
        t = self.cfg.train
        self._install_signal_handlers()
        progress = self._progress()
        ended_early = False
        try:
            while not self._budget_done():
                out = self.train_step()
                if out is None:
                    ended_early = True
                    log.info(
                        "data ended at step %d (a source ran out on at least one rank); stopping",
                        self.state.step,
                    )
                    break
                if out.get("skipped"):
                    continue
                step = self.state.step
                if step % t.log_every == 0 or self._budget_done():
                    self.metrics.log(step, self._window_metrics(out))
                if t.val_every and step % t.val_every == 0:
                    self.metrics.log(step, self.evaluate())
                for cb in self.callbacks:
                    if hasattr(cb, "on_step_end"):
                        cb.on_step_end(self, out)
                if progress is not None:
                    progress.update(
                        self._task, completed=step, total=self.state.total_steps, loss=out["loss"]
                    )
                if self.stop_requested:
                    self.stop_signal = self.stop_signal or signal.SIGTERM  # set by another rank's signal
                    log.warning("stop signal received: saving a checkpoint at step %d and exiting", step)
                    self.save()
                    return
                if self._checkpoint_due(out):
                    self.save()
        finally:
            if progress is not None:
                progress.stop()
        if self.last_checkpoint is None or ckpt.step_dir_name(self.state.step) != self.last_checkpoint.name:
            self.save()
        if not ended_early or self.state.step > 0:
            self.export()
        for cb in self.callbacks:
            if hasattr(cb, "on_train_end"):
                cb.on_train_end(self)

    def train_step(self) -> dict[str, Any] | None:
        """One optimizer step over ``accum`` micro-batches; None when some rank ran out of data."""
        info, t = self.info, self.cfg.train
        t0 = time.perf_counter()
        micro: list[tuple[str, dict[str, Any]]] = []
        for _ in range(self.accum):
            try:
                micro.append(next(self.mixer))
            except StopIteration:
                break
        flags = torch.tensor([float(len(micro) < self.accum), float(self.stop_requested)])
        self._all_reduce(flags)
        if flags[0] > 0:
            return None
        self.stop_requested = bool(flags[1] > 0)
        t_data = time.perf_counter() - t0

        labels, n_lab = self.mixer.labels, len(self.mixer.labels)
        # host: samples, tokens, micro-batches per label, flops; device: loss sums (one sync per step)
        host = torch.zeros(3 + n_lab, dtype=torch.float64)
        dev = torch.zeros(2 + n_lab, dtype=torch.float64, device=info.device)  # loss, nonfinite, per label
        model_metrics: dict[str, float] = {}
        if not (self.module.training and self.model.training):  # evaluate() / generate() in a callback left eval mode
            self.module.train()
        for i, (label, batch) in enumerate(micro):
            j = labels.index(label)
            host[0] += batch_num_samples(batch)
            host[1] += batch_num_tokens(batch)
            host[3 + j] += 1
            batch = prec.cast_batch(move_to_device(batch, info.device), t.precision)
            with self._sync_context(last=i == self.accum - 1), prec.autocast(t.precision, info.device):
                loss, extra = self.module(batch)
            (loss / self.accum).backward()
            value = loss.detach().to(torch.float64)
            finite = torch.isfinite(value)
            value = torch.where(finite, value, torch.zeros_like(value))
            dev[0] += value
            dev[1] += (~finite).to(torch.float64)
            dev[2 + j] += value
            host[2] += batch_num_samples(batch) * float(
                getattr(self.model, "flops_per_sample", _no_flops)(batch)
            )
            for k, v in extra.items():
                model_metrics[k] = model_metrics.get(k, 0.0) + float(v) / len(micro)
        stats = torch.cat(
            [dev.cpu(), host]
        )  # loss, nonfinite, per-label loss, samples, tokens, flops, per-label count
        grad_norm = self._clip_grad_norm()
        self._all_reduce(stats)
        nonfinite = stats[1] > 0 or not math.isfinite(grad_norm)
        if nonfinite:
            return self._handle_nonfinite(stats, grad_norm)

        if self.state.total_steps is None:  # token budget: fix the schedule length from the first step
            tokens = max(1.0, float(stats[3 + n_lab]))
            self.state.total_steps = max(1, math.ceil(self.cfg.train.budget.tokens / tokens))
        lr_factor = self.schedule.factor(self.state.step, self.state.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.state.step += 1
        samples, tokens, flops = (float(x) for x in stats[2 + n_lab : 5 + n_lab])
        self.state.samples += int(samples)
        self.state.tokens += int(tokens)
        step_time = time.perf_counter() - t0
        n_micro_global = self.accum * info.world_size
        out: dict[str, Any] = {
            "loss": float(stats[0]) / n_micro_global,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "samples": int(samples),
            "tokens": int(tokens),
            "flops": flops,
            "step_time": step_time,
            "data_time": t_data,
            **{f"model/{k}": v for k, v in model_metrics.items()},
        }
        if n_lab > 1:
            for j, label in enumerate(labels):
                count = float(stats[5 + n_lab + j])
                if count:
                    out[f"loss/{label}"] = float(stats[2 + j]) / count
        self._accumulate_window(out)
        return out

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

    def _app_state(self) -> dict[str, Any]:
        model_sd, optim_sd = get_state_dict(self.module, self.optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def save(self) -> Path:
        """Collective: write ``checkpoints/step_XXXXXXXX`` atomically, prune, queue the remote upload."""
        info = self.info
        rank_state = {
            "train": self.state.to_dict(),
            "rng": capture_rng(),
            "mixer": self.mixer.state_dict(),
            "world_size": info.world_size,
        }
        meta = {
            "samples": self.state.samples,
            "tokens": self.state.tokens,
            "ema": self.ema is not None,
            "plugins": self._plugin_versions(),
            "config": to_dict(self.cfg),  # compared with the config of a later --resume
        }
        path = ckpt.save_checkpoint(
            self.ckpt_root, self.state.step, self._app_state(), rank_state, meta, info
        )
        self.last_checkpoint = path
        if info.is_main:
            protect = self.remote.pending() | {path} if self.remote else {path}
            ckpt.prune(self.ckpt_root, self.cfg.train.checkpoint.keep_last, protect)
            if self.remote is not None:
                self.remote.submit(path, f"checkpoints/{path.name}")
        if info.is_main:
            log.info("saved checkpoint %s", path)
        return path

    def _resume(self, resume: str, trust_checkpoint: bool = False) -> None:
        """Load ``resume`` ('latest', a folder, or a URL) after verifying it (see checkpoint_integrity)."""
        info = self.info
        path: Path | None
        if resume == "latest":
            path = ckpt.latest_checkpoint(self.ckpt_root)
            if path is None and self.cfg.run.remote_dir:
                path = self._download(self.cfg.run.remote_dir)
            if path is None:
                log.info("--resume latest: no checkpoint in %s; starting fresh", self.ckpt_root)
                return
        elif "://" in resume and not resume.startswith("file://"):
            path = self._download(resume)
            if path is None:
                raise FoundryError(
                    f"--resume {resume}: no complete checkpoint could be downloaded (see the log)"
                )
        else:
            path = Path(resume.removeprefix("file://"))
            if not path.is_dir():
                raise FoundryError(f"--resume {resume}: no such checkpoint directory")
        self._verify(path, trust_checkpoint)
        app_state = self._app_state()
        has_ema = bool(ckpt.read_meta(path).get("ema"))
        if not has_ema:
            app_state.pop("ema", None)
        self._check_resume(path, app_state)
        rank_state, meta = ckpt.load_checkpoint(path, app_state, info)
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
        self.state = TrainState.from_dict(rank_state["train"])
        self.mixer.load_state_dict(rank_state["mixer"])
        if rank_state["world_size"] == info.world_size:
            restore_rng(rank_state["rng"])
        else:
            log.warning(
                "resuming a %d-rank checkpoint on %d ranks: weights, optimizer, counters and data cursors are "
                "restored; per-rank RNG streams are reseeded",
                rank_state["world_size"],
                info.world_size,
            )
            torch.manual_seed(self.cfg.run.seed + 7919 * self.state.step + info.rank)
        self.last_checkpoint = path
        log.info("resumed from %s (step %d, %d samples)", path, self.state.step, self.state.samples)

    def _verify(self, path: Path, trust_checkpoint: bool) -> None:
        """Rank 0 checks the manifest (hashing once); every rank raises the same error if it fails."""
        error, verified = None, False
        if self.info.is_main:
            try:
                verified = verify_checkpoint(path, trust_unverified=trust_checkpoint)
            except FoundryError as exc:
                error = str(exc)
        error, verified = _broadcast((error, verified))
        if error is not None:
            raise UntrustedCheckpointError(error)
        if not verified and self.info.is_main:
            log.warning("%s has no checksum manifest; loading it because --trust-checkpoint was given", path)

    def _check_resume(self, path: Path, app_state: dict[str, Any]) -> None:
        """Refuse a model/optimizer that does not fit the checkpoint; warn about changed settings."""
        from torch.distributed.checkpoint._nested_dict import flatten_state_dict  # the keys DCP uses

        flat, _ = flatten_state_dict(app_state)
        wanted = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in flat.items()}
        old_cfg = ckpt.read_meta(path).get("config")
        warnings = check_resume(str(path), old_cfg, to_dict(self.cfg), stored_shapes(path), wanted)
        if self.info.is_main:
            if old_cfg is None:
                log.warning("--resume %s: the checkpoint records no run config; settings cannot be compared", path)
            for warning in warnings:
                log.warning("%s", warning)

    def _download(self, url: str) -> Path | None:
        path = None
        if self.info.is_main:
            try:
                path = download_checkpoint(url, self.ckpt_root)
            except FoundryError as exc:
                log.warning("%s", exc)
        path = _broadcast(path)
        return path

    # ------------------------------------------------------------------ export

    def export(self, out_dir: Path | None = None) -> Path:
        """Collective: gather full weights (EMA if enabled), rebuild the model on rank 0, write ``export/``
        (or ``out_dir``: an export of the current weights during training, e.g. for closed-loop evaluation)."""
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = (
            get_model_state_dict(self.module, options=opts)
            if dist.is_initialized()
            else self.module.state_dict()
        )
        full = {k.removeprefix("model."): v for k, v in full.items()}
        use_ema = self.ema is not None and self.cfg.train.ema.use_for_export
        ema_full = (
            {n: full_tensor(t).detach().cpu() for n, t in self.ema.state_dict().items()} if use_ema else {}
        )
        out = Path(out_dir) if out_dir is not None else self.run_dir / "export"
        if self.info.is_main:
            from foundry_core.export import export_model

            with torch.random.fork_rng(devices=[]):
                fresh = self.registry.build(
                    "model", self.cfg.model, BuildContext(self.registry, device="cpu"), where="model"
                )
            fresh.load_state_dict(
                {k: v.float() if v.is_floating_point() else v for k, v in full.items()}, strict=True
            )
            with torch.no_grad():  # EMA by parameter name: tied weights are one parameter
                for name, p in fresh.named_parameters():
                    if name in ema_full:
                        p.copy_(ema_full[name])
            meta = {
                "step": self.state.step,
                "samples": self.state.samples,
                "tokens": self.state.tokens,
                "plugins": self._plugin_versions(),
                "ema": use_ema,
            }
            export_model(fresh, self.cfg.model, out, extra_meta=meta)
            if self.remote is not None and out_dir is None:
                self.remote.submit(out, "export")
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
            if self.remote is not None:
                failures = self.remote.close()
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

    def _checkpoint_due(self, out: dict[str, Any]) -> bool:
        c = self.cfg.train.checkpoint
        if c.every_steps and self.state.step % c.every_steps == 0:
            return True
        if c.every_samples:
            return (
                self.state.samples // c.every_samples
                > (self.state.samples - out["samples"]) // c.every_samples
            )
        return False

    def _handle_nonfinite(self, stats: torch.Tensor, grad_norm: float) -> dict[str, Any]:
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
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.cfg.distributed.strategy == "ddp" and not last:
            return self.module.no_sync()
        if self.cfg.distributed.strategy == "fsdp2" and self.accum > 1:
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

    def _progress(self) -> Any:
        if not (self.cfg.train.progress and self.info.is_main):
            return None
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
        self._task = progress.add_task(
            self.cfg.run.name, total=self.state.total_steps, completed=self.state.step, loss=float("nan")
        )
        progress.start()
        return progress


def _no_flops(batch: dict[str, Any]) -> float:
    return 0.0


def _broadcast(obj: Any) -> Any:
    from foundry_core.distributed import broadcast_object

    return broadcast_object(obj)


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
