"""Many videos with one command: a JSONL of jobs -> DIR/<name>.mp4 + DIR/report.jsonl.

Each job is one `generate` (the same code: run.render), so a job gives the frames `generate`
gives for the same inputs and seed. In this process the models are loaded once; with Ray each
worker (an actor per GPU, or per CPU on a CPU cluster) loads them once and takes jobs as it frees.
Resumable and fault tolerant by construction:
- an output exists only when complete (written under a temporary name, then renamed), so a rerun
  skips every job whose MP4 exists and redoes the rest;
- a bad job (no face, broken audio) is one report line and the others go on;
- a worker process that dies mid-job is replaced and the job retried (RETRIES times at most);
- the report is appended and flushed as each job ends, so a crash or Ctrl-C loses nothing done.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import EmoCASTError, InputError, MissingDependencyError

log = logging.getLogger("EmoCAST")

REPORT = "report.jsonl"
#: Retries of a job whose worker died (the job is tried 1 + RETRIES times).
RETRIES = 2
#: Keys of a job besides the generate settings.
INPUT_KEYS = ("name", "image", "audio", "prompt", "emotion_schedule")
#: Generate options that are the batch's, not a job's (the workers' device).
BATCH_ONLY = ("device",)


@dataclass
class Job:
    name: str
    line: int
    args: argparse.Namespace  # the generate arguments of this job (paths absolute)
    emotion: object           # the prompt, or the parsed EmotionSchedule


def job_options() -> dict[str, argparse.Action]:
    """The generate settings a job may set (dest -> argparse action): the CLI's own list, so new ones come free."""
    from .options import add_face_args, add_sampling_args

    p = argparse.ArgumentParser(add_help=False)
    add_face_args(p)
    add_sampling_args(p)
    return {a.dest: a for a in p._actions if a.dest not in BATCH_ONLY}


def _value(action: argparse.Action, key: str, value):
    """`value` checked against the option's type and choices (JSON types, no silent conversion)."""
    if isinstance(action, argparse._StoreTrueAction):
        ok = isinstance(value, bool)
    elif action.type is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif action.type is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    want = "true/false" if isinstance(action, argparse._StoreTrueAction) else \
        getattr(action.type, "__name__", "string")
    if not ok and not (value is None and action.default is None):
        raise InputError(f"{key} must be {want}, got {json.dumps(value)}.")
    if action.choices and value not in action.choices:
        raise InputError(f"{key} must be one of {', '.join(map(repr, action.choices))}, got {value!r}.")
    return value


def _default_name(job: dict) -> str:
    digest = hashlib.sha1(json.dumps(job, sort_keys=True).encode()).hexdigest()[:8]
    return f"{Path(str(job.get('image', 'job'))).stem}_{Path(str(job.get('audio', ''))).stem}_{digest}"


def parse_job(obj, line: int, base: argparse.Namespace, folder: Path, options: dict) -> Job:
    """One JSONL object -> Job, or an InputError with one line saying what is wrong."""
    from .run import job_emotion, sampling_settings

    if not isinstance(obj, dict):
        raise InputError(f"a job must be a JSON object, got {type(obj).__name__}.")
    unknown = sorted(set(obj) - set(INPUT_KEYS) - set(options))
    if unknown:
        raise InputError(f"unknown key{'s' * (len(unknown) > 1)} {', '.join(unknown)} (known: "
                         f"{', '.join(INPUT_KEYS + tuple(options))}).")
    for key in ("image", "audio"):
        if not isinstance(obj.get(key), str):
            raise InputError(f"the job needs {key!r} (a file path).")
    if ("prompt" in obj) == ("emotion_schedule" in obj):
        raise InputError("the job needs exactly one of 'prompt' or 'emotion_schedule' (a file path).")
    for key in ("prompt", "emotion_schedule", "name"):
        if key in obj and not (isinstance(obj[key], str) and obj[key].strip()):
            raise InputError(f"{key} must be a non-empty string, got {json.dumps(obj[key])}.")
    name = obj.get("name") or _default_name(obj)
    if name.startswith(".") or any(c in name for c in '/\\\0\n'):
        raise InputError(f"name {name!r} is not a plain file name (no '/', '\\', no leading '.').")
    args = argparse.Namespace(**vars(base))
    args.prompt, args.emotion_schedule = obj.get("prompt"), None
    for key in ("image", "audio", "emotion_schedule"):
        if key in obj:
            setattr(args, key, str(folder / os.path.expanduser(obj[key])))
    for key, value in obj.items():
        if key in options:
            setattr(args, key, _value(options[key], key, value))
    sampling_settings(args)  # range checks of the sampling settings, here rather than on a worker
    return Job(name, line, args, job_emotion(args))


def read_jobs(path: Path, base: argparse.Namespace) -> tuple[list[Job], list[dict]]:
    """The good jobs and one error row per bad line (blank lines and '#' comments are skipped)."""
    if not path.is_file():
        raise InputError(f"jobs file not found: {path}", hint="Pass a JSONL file: one JSON object (a job) a line.")
    options, jobs, bad, names = job_options(), [], [], {}
    for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        obj = None
        try:
            obj = json.loads(text)
            job = parse_job(obj, n, base, path.parent.resolve(), options)
            if job.name in names:
                raise InputError(f"duplicate name {job.name!r} (also line {names[job.name]}).")
            names[job.name] = n
            jobs.append(job)
        except json.JSONDecodeError as e:
            bad.append(_row(f"line{n}", n, "error", f"not JSON: {e.msg} at column {e.colno}."))
        except EmoCASTError as e:
            name = obj.get("name") if isinstance(obj, dict) and isinstance(obj.get("name"), str) else f"line{n}"
            bad.append(_row(name, n, "error", e.message))
    return jobs, bad


def _row(name: str, line: int, status: str, error: str | None = None, **extra) -> dict:
    return {"name": name, "line": line, "status": status, "error": error, "seconds": None, "device": None,
            "worker": None, **extra}


def one_line(e: BaseException) -> str:
    """An error as one line: the message of ours, else `Type: first line`."""
    if isinstance(e, EmoCASTError):
        return e.message.splitlines()[0] if e.message else type(e).__name__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


class Worker:
    """Loads the models once (per dtype) and renders jobs; the same class in this process or as a Ray actor."""

    def __init__(self, base: argparse.Namespace, models_dir: str, quiet: bool = True):
        if quiet:  # the bar / report say how jobs went; the sampler's per-step lines would drown them
            log.setLevel(logging.WARNING)
        self.base, self.models_dir, self.models = base, Path(models_dir), {}
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def _models(self, dtype: str):
        from .run import device_dtype, load_models

        device, torch_dtype = device_dtype(self.base.device, dtype)
        if (device, torch_dtype) not in self.models:
            self.models[device, torch_dtype] = load_models(self.models_dir, self.base, device, torch_dtype)
        return device, self.models[device, torch_dtype]

    def start(self) -> dict:
        """Load the batch's models now; a failure is the batch's (returned, to be raised by the caller)."""
        try:
            device, _ = self._models(self.base.dtype)
        except EmoCASTError as e:
            return {"error": e.message, "hint": e.hint, "kind": type(e).__name__}
        return {"worker": self.name, "device": _describe(device)}

    def run(self, job: Job, out: Path, attempt: int = 1) -> dict:
        """Render `job` to `out`; the report row (a bad job is an error row, never an exception)."""
        from .run import render

        t0, device = time.perf_counter(), None
        try:
            device, models = self._models(job.args.dtype)
            info = render(models, job.args, job.emotion, out, progress=lambda p: None)
            row = _row(job.name, job.line, "ok", frames=info.frames)
        except Exception as e:  # noqa: BLE001 - one bad job must not stop the batch
            log.debug("job %s failed", job.name, exc_info=True)
            row = _row(job.name, job.line, "error", one_line(e))
            _free_cuda(e)
        row.update(seconds=round(time.perf_counter() - t0, 3), device=_describe(device) if device else None,
                   worker=self.name, attempts=attempt)
        return row

    def run_bytes(self, job: Job, image: bytes, audio: bytes, attempt: int) -> tuple[dict, bytes | None]:
        """`run` for a remote worker: inputs come as bytes, the MP4 goes back as bytes (no shared disk needed)."""
        import tempfile
        from dataclasses import replace

        with tempfile.TemporaryDirectory(prefix="emocast-job-") as tmp:
            args = argparse.Namespace(**vars(job.args))
            args.image = str(Path(tmp) / f"image{Path(job.args.image).suffix}")
            args.audio = str(Path(tmp) / f"audio{Path(job.args.audio).suffix}")
            Path(args.image).write_bytes(image)
            Path(args.audio).write_bytes(audio)
            out = Path(tmp) / "out.mp4"
            row = self.run(replace(job, args=args), out, attempt)
            return row, out.read_bytes() if row["status"] == "ok" else None


def _describe(device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H200)': which card of the node (Ray numbers each worker's GPUs from 0)."""
    if device.type != "cuda":
        return str(device)
    import torch

    index = torch.cuda.current_device() if device.index is None else device.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _free_cuda(e: Exception) -> None:
    if type(e).__name__ == "OutOfMemoryError":
        import torch

        torch.cuda.empty_cache()


class Report:
    """report.jsonl, appended one line per finished job and flushed at once (a crash loses nothing)."""

    def __init__(self, out_dir: Path, total: int):
        self.path = out_dir / REPORT
        self.file = open(self.path, "a", encoding="utf-8")
        self.run = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.counts = {"ok": 0, "error": 0, "skipped": 0}
        self.total, self.done = total, 0
        self.bar = None
        try:
            if sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="job", desc="batch")
        except ImportError:
            pass

    def add(self, row: dict) -> None:
        self.file.write(json.dumps({**row, "run": self.run}) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.counts[row["status"]] += 1
        self.done += 1
        seconds = f" in {row['seconds']:.1f} s" if row.get("seconds") is not None else ""
        where = f" on {row['worker']}" if row.get("worker") else ""
        text = f"[{self.done}/{self.total}] {row['name']}: {row['status']}{seconds}{where}" + \
               (f": {row['error']}" if row.get("error") else "")
        if self.bar is not None:
            self.bar.update(1)
            if row["status"] == "error":
                self.bar.write(text)
        elif row["status"] == "skipped":
            log.debug(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.file.close()


def run_local(jobs: list[Job], out_dir: Path, base, models_dir: Path, report: Report) -> None:
    """Every job in this process, one after the other, with the models loaded once."""
    level = log.level
    try:
        worker = Worker(base, str(models_dir), quiet=not base.verbose)
        started = worker.start()
        if "error" in started:
            raise _error(started)
        for job in jobs:
            report.add(worker.run(job, out_dir / f"{job.name}.mp4"))
    finally:
        log.setLevel(level)


def _error(started: dict) -> EmoCASTError:
    from . import errors

    return getattr(errors, started["kind"], EmoCASTError)(started["error"], hint=started["hint"])


def run_batch(args, run_ray=None) -> int:
    """The `batch` command: read the jobs, skip the finished, run the rest, report. Exit 1 if a job failed.

    run_ray: the Ray runner (emocast.batch_ray.run_ray, which builds on this module), for `--ray`."""
    from .run import models_folder

    t0 = time.perf_counter()
    args.verbose = getattr(args, "verbose", False)
    if args.ray:
        import_ray()  # before any work: a missing extra is one line, not a half-started batch
    jobs, bad = read_jobs(Path(args.jobs), args)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}.")
    if args.gpus_per_worker < 0:
        raise InputError(f"--gpus-per-worker must be >= 0, got {args.gpus_per_worker}.")
    remote = args.ray not in (None, "local")  # the models folder is the workers' path: checked there
    models_dir = Path(args.models).absolute() if remote and args.models else models_folder(args.models).absolute()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir, len(jobs) + len(bad))
    try:
        for row in bad:
            report.add(row)
        todo = []
        for job in jobs:
            if (out_dir / f"{job.name}.mp4").exists():
                report.add(_row(job.name, job.line, "skipped"))
            else:
                todo.append(job)
        if todo and args.ray:
            run_ray(todo, out_dir, args, str(models_dir), report)
        elif todo:
            run_local(todo, out_dir, args, models_dir, report)
    except KeyboardInterrupt:
        left = report.total - report.done
        print(f"interrupted: {report.done} of {report.total} jobs reported, {left} left; run the same command "
              "again to do the rest.", file=sys.stderr)
        raise
    finally:
        report.close()
    c = report.counts
    print(f"batch: {c['ok']} ok, {c['error']} error, {c['skipped']} skipped in {time.perf_counter() - t0:.0f} s; "
          f"report {report.path}")
    return 1 if c["error"] else 0


def import_ray():
    """Ray, or a one-line error saying how to get it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray, which is not installed.",
                                     hint='pip install "ray>=2.9" (or the pack\'s extra: pip install ".[ray]"); '
                                          "without --ray the jobs run in this process.") from None
    return ray


def payload(job: Job) -> tuple[bytes, bytes]:
    """The job's input files as bytes, for a worker that may not see this disk."""
    return Path(job.args.image).read_bytes(), Path(job.args.audio).read_bytes()


def write_output(data: bytes, out: Path) -> None:
    """Write an MP4 received from a worker under a temporary name, then rename (never half a file)."""
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)

