"""The batch on Ray: one actor per GPU (or per CPU on a CPU cluster), each loading the models once.

The driver keeps one job in flight per worker and hands the next as each one frees (so fast and
slow jobs balance), reads the inputs and writes the outputs itself (the workers need the models,
not this disk), and replaces a worker whose process dies, retrying its job (batch.RETRIES times).
"""
from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path

from .batch import RETRIES, Job, Report, Worker, _error, _row, import_ray, one_line, payload, write_output
from .errors import InputError

log = logging.getLogger("EmoCAST")


def _init(ray, address: str, workers: int | None, verbose: bool) -> bool:
    """Connect (True: this call started Ray and must shut it down)."""
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.INFO if verbose else logging.WARNING}
    if address == "local":
        ray.init(num_cpus=max(os.cpu_count() or 1, workers or 0), include_dashboard=False, **quiet)
        return True
    _check_reachable(address)
    try:  # ship this package's code so the workers run the same version (they need its requirements)
        ray.init(address=address, runtime_env={"py_modules": [str(Path(__file__).parent)]}, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InputError(f"could not join the Ray cluster at {address!r}: {one_line(e)}",
                         hint="Start one first (`ray start --head`, KubeRay, ...) and pass its address, 'auto' "
                              "on one of its nodes, or use --ray local.") from None
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds on a host:port nobody listens on (Ray itself retries for many minutes)."""
    import socket

    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        return  # 'auto', or a form Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise InputError(f"could not join the Ray cluster at {address!r}: {e.strerror or e}.",
                         hint="Start one first (`ray start --head`, KubeRay, ...) and pass its address, 'auto' "
                              "on one of its nodes, or use --ray local.") from None


def worker_count(ray, workers: int | None, gpus_per_worker: float, jobs: int) -> tuple[int, dict]:
    """How many workers and the resources of each: a GPU share each when the cluster has GPUs, else a CPU."""
    res = ray.cluster_resources()
    gpus = res.get("GPU", 0) if gpus_per_worker > 0 else 0
    options = {"num_cpus": 1, "num_gpus": gpus_per_worker if gpus else 0}
    n = workers or (int(gpus // gpus_per_worker) if gpus else int(res.get("CPU", 1)))
    return max(1, min(n, jobs)), options


def run_ray(jobs: list[Job], out_dir: Path, args, models_dir: str, report: Report) -> None:
    ray = import_ray()
    from ray.exceptions import RayActorError, RayTaskError

    started = _init(ray, args.ray, args.workers, args.verbose)
    actors, starting, running, idle = [], {}, {}, []
    try:
        n, options = worker_count(ray, args.workers, args.gpus_per_worker, len(jobs))
        log.warning("batch: %d jobs on %d Ray workers (%s each)", len(jobs), n,
                    f"{options['num_gpus']:g} GPU" if options["num_gpus"] else "1 CPU")
        remote = ray.remote(Worker).options(**options, max_restarts=0)

        def spawn():
            actor = remote.remote(args, models_dir, not args.verbose)
            actors.append(actor)
            starting[actor.start.remote()] = actor

        for _ in range(n):
            spawn()
        queue, start_failures = deque((job, 1) for job in jobs), 0
        while queue or running:
            while idle and queue:
                actor, (job, attempt) = idle.pop(), queue.popleft()
                running[actor.run_bytes.remote(job, *payload(job), attempt)] = (actor, job, attempt)
            (ref,), _ = ray.wait(list(starting) + list(running), num_returns=1)
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    info = ray.get(ref)
                except RayActorError as e:
                    start_failures += 1
                    if start_failures > 2 * n:
                        raise InputError(f"Ray workers keep dying while loading the models: {one_line(e)}") from None
                    log.warning("batch: a worker died while loading the models (%s); starting another", one_line(e))
                    spawn()
                    continue
                if "error" in info:
                    raise _error(info)
                log.info("batch: worker %s ready on %s", info["worker"], info["device"])
                idle.append(actor)
                continue
            actor, job, attempt = running.pop(ref)
            try:
                row, data = ray.get(ref)
            except RayActorError as e:
                _kill(ray, actor)
                if queue or attempt <= RETRIES:
                    spawn()  # a new worker in its place, while there is work for it
                if attempt <= RETRIES:
                    log.warning("batch: the worker running %s died (%s); retrying it on a new worker (attempt %d "
                                "of %d)", job.name, one_line(e), attempt + 1, RETRIES + 1)
                    queue.appendleft((job, attempt + 1))
                else:
                    report.add(_row(job.name, job.line, "error", f"the worker died {attempt} times running this "
                                    f"job; last: {one_line(e)}", attempts=attempt))
                continue
            except RayTaskError as e:  # not a job error (those come back as rows): reading / sending the files
                row, data = _row(job.name, job.line, "error", one_line(e.cause or e), attempts=attempt), None
            if data is not None:
                write_output(data, out_dir / f"{job.name}.mp4")
            report.add(row)
            idle.append(actor)
    finally:
        for actor in actors:
            _kill(ray, actor)
        if started:
            ray.shutdown()


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already gone, or Ray is shutting down
        pass
