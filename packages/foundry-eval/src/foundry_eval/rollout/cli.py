"""CLI commands ``foundry eval run`` (rollouts) and ``foundry serve`` (policy server).

Import-light: the command bodies import the runner, grpc and policies lazily.
Tested by ``tests/test_eval_rollout.py`` and ``tests/test_eval_serving.py``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator

import click

from foundry_core.errors import FoundryError


class TooManyCrashes(FoundryError):
    """The evaluation ran and its results are written, but more episodes crashed than allowed."""

    exit_code = 1


def _split_tasks(values: tuple[str, ...]) -> list[str]:
    tasks = [t.strip() for value in values for t in value.split(",") if t.strip()]
    if not tasks:
        raise FoundryError("--tasks: give at least one task (e.g. --tasks push_to_target,stack_blocks)")
    return tasks


@click.command("run")
@click.option(
    "--policy", "policy", default=None, help="Export folder, 'random' or 'expert' (omit with --server)."
)
@click.option("--server", default=None, metavar="HOST:PORT", help="Evaluate the policy served at HOST:PORT.")
@click.option(
    "--tasks", "tasks", multiple=True, required=True, help="Task names, comma-separated or repeated."
)
@click.option("--episodes", type=click.IntRange(min=1), required=True, help="Episodes (scenarios) per task.")
@click.option("--out", "out_root", default="runs/eval", show_default=True, type=click.Path(file_okay=False))
@click.option("--model-name", default=None, help="Model folder name (default: from the policy).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--max-sample-size", type=click.IntRange(min=1), default=None, help="Budget per task (default N)."
)
@click.option("--start-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--eval-seed/--no-eval-seed", default=True, show_default=True, help="Add 100,000,000 to seeds.")
@click.option("--execute-steps", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--image-size", type=click.IntRange(min=8), default=None, help="Override the tasks' image size."
)
@click.option("--cameras", default=None, help="Override the tasks' cameras (comma-separated, or 'none').")
@click.option("--video", is_flag=True, help="Write a recording of every episode.")
@click.option("--video-format", type=click.Choice(["mp4", "gif"]), default="mp4", show_default=True)
@click.option(
    "--max-videos", type=click.IntRange(min=0), default=None, help="Record only the first K scenarios."
)
@click.option("--device", default="cpu", show_default=True, help="Torch device of an exported policy.")
@click.option(
    "--max-crash-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.05,
    show_default=True,
    help="Exit 1 when a larger share of all episodes crashed (simulator or policy exception).",
)
@click.option(
    "--protocol",
    type=click.Choice(["foundry", "lbm"]),
    default="foundry",
    show_default=True,
    help="Wire protocol of --server: Foundry's own, or LBM Eval's (any LBM-compatible policy server).",
)
def eval_run(
    policy: str | None,
    server: str | None,
    tasks: tuple[str, ...],
    episodes: int,
    out_root: str,
    model_name: str | None,
    workers: int,
    max_sample_size: int | None,
    start_index: int,
    eval_seed: bool,
    execute_steps: int,
    image_size: int | None,
    cameras: str | None,
    video: bool,
    video_format: str,
    max_videos: int | None,
    device: str,
    max_crash_rate: float,
    protocol: str,
) -> None:
    """Roll out a policy in simulated tasks and write results.json files (LBM Eval layout).

    A crashed episode (an exception in the simulator or the policy) counts as a failure in results.json;
    crashes are printed, and the exit status is 1 when their share exceeds --max-crash-rate.
    """
    from foundry_eval.rollout.runner import run_rollouts, success_count
    from foundry_eval.sim.cli import parse_cameras

    paths = run_rollouts(
        policy,
        _split_tasks(tasks),
        episodes,
        out_root,
        model_name,
        workers,
        server=server,
        protocol=protocol,
        max_sample_size_per_model=max_sample_size,
        start_index=start_index,
        use_eval_seed=eval_seed,
        execute_steps=execute_steps,
        video=video,
        video_format=video_format,
        max_videos=max_videos,
        image_size=image_size,
        cameras=parse_cameras(cameras) if cameras is not None else None,
        device=device,
    )
    crashed = total = 0
    for (task, (ok, n)), path in zip(success_count(paths).items(), paths):
        doc = json.loads(path.read_text(encoding="utf-8"))
        n_crashed = int(doc.get("num_crashed", 0))
        crashed, total = crashed + n_crashed, total + n
        click.echo(f"{task}: {ok}/{n} successes, {n_crashed} crashed -> {path}")
        crashes = [e for e in doc["evaluations"] if str(e.get("failure_message", "")).startswith("Traceback")]
        for e in crashes[:3]:  # the runner stores a crash's traceback as its failure_message
            last = e["failure_message"].strip().splitlines()[-1]
            click.secho(f"  crashed: scenario {e['scenario_index']}: {last}", fg="red", err=True)
        unmeasured = [e for e in doc["evaluations"] if e.get("metrics_error")]
        if unmeasured:  # the outcomes stand; the task's diagnostics are missing, and that is said
            first, last = unmeasured[0], unmeasured[0]["metrics_error"].strip().splitlines()[-1]
            click.secho(
                f"  {len(unmeasured)} episode(s) without metrics (episode_metrics() failed), e.g. scenario "
                f"{first['scenario_index']}: {last}",
                fg="yellow",
                err=True,
            )
    if total and crashed / total > max_crash_rate:
        raise TooManyCrashes(
            f"{crashed}/{total} episodes crashed (more than --max-crash-rate {max_crash_rate:g}); they count as "
            "failures in the results above. The tracebacks are in each results.json (failure_message)"
        )


def _lbm_option(name: str, kind: click.ParamType, default: object, text: str):  # noqa: ANN202 (a decorator)
    """An option of ``foundry serve --protocol lbm`` only."""
    return click.option(name, type=kind, default=default, show_default=True, help=f"lbm: {text}")


@click.command("serve")
@click.argument("export_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--policy", "builtin", type=click.Choice(["random"]), default=None, help="Serve a built-in policy."
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (loopback by default)."
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=50051,
    show_default=True,
    help="0 = any free port.",
)
@click.option("--execute-steps", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-sessions", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--ensemble",
    type=click.Choice(["none", "temporal"]),
    default="none",
    show_default=True,
    help="temporal: plan every step and average overlapping chunks (ACT), instead of --execute-steps.",
)
@click.option("--device", default="cpu", show_default=True, help="Torch device of the exported policy.")
@click.option(
    "--allow-extra-cameras", is_flag=True, help="Drop cameras the policy does not use (else an error)."
)
@click.option(
    "--protocol",
    type=click.Choice(["foundry", "lbm"]),
    default="foundry",
    show_default=True,
    help="Foundry's own protocol, or LBM Eval's (lbm_policy_interface + grpc.health.v1).",
)
@click.option(
    "--camera-map",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="lbm: YAML camera serial -> policy camera name (default: the map recorded in the export).",
)
@_lbm_option("--batch-max-size", click.IntRange(min=1), 1, "clients per forward pass.")
@_lbm_option(
    "--batch-timeout-s", click.FloatRange(min=0), 0.5, "longest wait for more clients to fill a batch."
)
@click.option(
    "--instruction",
    default="",
    help="lbm: the instruction for Steps that carry none (a language-conditioned policy needs one).",
)
@_lbm_option(
    "--resize",
    click.Choice(["center_crop", "stretch"]),
    "center_crop",
    "how frames of another size are resized.",
)
def serve(
    export_dir: str | None,
    builtin: str | None,
    host: str,
    port: int,
    execute_steps: int,
    max_sessions: int,
    ensemble: str,
    device: str,
    allow_extra_cameras: bool,
    protocol: str,
    camera_map: str | None,
    batch_max_size: int,
    batch_timeout_s: float,
    instruction: str,
    resize: str,
) -> None:
    """Serve a policy over gRPC: Foundry's protocol, or LBM Eval's with ``--protocol lbm``."""
    from foundry_eval.rollout.policies import ExportedPolicyFactory, RandomPolicy
    from foundry_eval.serving.server import PolicyServer
    from foundry_eval.serving.session import PolicySessions

    if (export_dir is None) == (builtin is None):
        raise FoundryError("give exactly one of EXPORT_DIR or --policy random")
    if protocol == "lbm":
        import logging

        from foundry_eval.serving.lbm_server import start_lbm_server

        if not logging.getLogger().handlers:  # the server's log is its user interface (docs/lbm_eval.md)
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        # Started inside the try: a Ctrl-C right after the start (before wait) must still stop the
        # server, whose gRPC threads would otherwise keep the process alive (a hang, seen in CI).
        with _signals_stop_the_server():
            lbm_server = None
            try:
                lbm_server = start_lbm_server(
                    export_dir or builtin,
                    host=host,
                    port=port,
                    device=device,
                    camera_map=camera_map,
                    execute_steps=execute_steps,
                    max_sessions=max_sessions,
                    ensemble=ensemble,
                    batch_max_size=batch_max_size,
                    batch_timeout_s=batch_timeout_s,
                    resize=resize,
                    instruction=instruction,
                )
                click.echo(
                    f"serving {export_dir or builtin} (LBM Eval protocol) on {lbm_server.address} (Ctrl-C to stop)"
                )
                lbm_server.wait()
            except KeyboardInterrupt:
                if lbm_server is None:
                    raise  # interrupted while loading: not a clean stop
            finally:
                if lbm_server is not None:
                    lbm_server.stop()
        return
    lbm_only = (
        ("--camera-map", camera_map, None),
        ("--batch-max-size", batch_max_size, 1),
        ("--instruction", instruction, ""),
    )
    for name, value, default in lbm_only:
        if value != default:
            raise FoundryError(f"{name} applies to --protocol lbm only")
    factory = RandomPolicy if builtin == "random" else ExportedPolicyFactory(export_dir, device)
    sessions = PolicySessions(
        factory,
        execute_steps=execute_steps,
        max_sessions=max_sessions,
        allow_extra_cameras=allow_extra_cameras,
        ensemble=ensemble,
    )
    sessions.metadata()  # load the policy now: errors show before the server starts
    server = PolicyServer(sessions, host=host, port=port)
    with _signals_stop_the_server():
        try:  # see the LBM branch: a Ctrl-C at any point after the start stops the server
            server.start()
            click.echo(f"serving {export_dir or builtin} on {server.address} (Ctrl-C to stop)")
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()


@contextlib.contextmanager
def _signals_stop_the_server() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt while serving, so either stops the server
    gracefully: even where the launching shell ignored SIGINT (a background job inherits SIG_IGN, and
    Python then never raises KeyboardInterrupt: a served process hung in such a CI run), and under
    container runtimes that stop with SIGTERM. The previous handlers come back afterwards."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_commands(cli: click.Group) -> None:
    """Attach ``foundry eval run`` and ``foundry serve``."""
    from foundry_core.cli.groups import group

    group(cli, "eval").add_command(eval_run)
    cli.add_command(serve)
