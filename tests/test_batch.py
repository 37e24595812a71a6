"""`python -m emocast batch`: job checking, in-process and Ray runs on the tiny exported models, faults, resume."""
import json
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_cli

#: A fast job on the tiny models: 0.2 s of speech = 5 frames, one clip of 5, one step, 64 px, no paste-back.
FAST = ["--size", "64", "--steps", "1", "--clip-length", "5", "--no-paste-back"]


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """A portrait, 0.2 s of speech, a faceless image and a broken audio file."""
    import soundfile as sf
    from PIL import Image

    d = tmp_path_factory.mktemp("batch_inputs")
    shutil.copy(ROOT / "emocast/demo/assets/portrait_astronaut_512.png", d / "face.png")
    wave, sr = sf.read(ROOT / "emocast/demo/assets/speech_en_16k.wav")
    sf.write(d / "speech.wav", wave[: int(0.2 * sr)], sr)
    Image.new("RGB", (256, 256), (128, 128, 128)).save(d / "blank.png")
    (d / "broken.wav").write_bytes(b"RIFF, but not really a wav file")
    return d


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The tiny demo models, exported once, in the ComfyUI layout."""
    from emocast.demo.models import export_models

    d = tmp_path_factory.mktemp("batch_models")
    export_models(d)
    return d


def write_jobs(path: Path, jobs) -> Path:
    path.write_text("\n".join(j if isinstance(j, str) else json.dumps(j) for j in jobs) + "\n")
    return path


def report(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]


def last_run(out: Path) -> dict[str, dict]:
    rows = report(out)
    return {r["name"]: r for r in rows if r["run"] == rows[-1]["run"]}


def frames(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def job(name, image="face.png", audio="speech.wav", **kw):
    return {"name": name, "image": image, "audio": audio, "prompt": "A person is talking with happy emotion.", **kw}


def base_args(**kw):
    from emocast.cli import build_parser

    return build_parser().parse_args(["batch", "jobs.jsonl", "--out", "o", *FAST]).__dict__ | kw


# --- the jobs file: every bad line is one line of error, the good ones run -------------------------------------

@pytest.mark.parametrize("line,message", [
    ({"image": "face.png", "audio": "speech.wav", "prompt": "p", "stepz": 3}, "unknown key stepz (known: name,"),
    (job("x", steps="3"), 'steps must be int, got "3".'),
    (job("x", cfg=True), "cfg must be float, got true."),
    (job("x", dtype="fp8"), "dtype must be one of 'auto', 'fp32', 'fp16', 'bf16', got 'fp8'."),
    (job("x", no_paste_back=1), "no_paste_back must be true/false, got 1."),
    (job("x", steps=0), "steps must be at least 1, got 0."),
    (job("x", image="missing.png"), "image file not found:"),
    (job("x", emotion_schedule="s.txt"), "the job needs exactly one of 'prompt' or 'emotion_schedule'"),
    ({"image": "face.png", "prompt": "p"}, "the job needs 'audio' (a file path)."),
    (job("../x"), "name '../x' is not a plain file name (no '/', '\\', no leading '.')."),
    (job(".x"), "name '.x' is not a plain file name"),
    ("[1, 2]", "a job must be a JSON object, got list."),
    ("{not json", "not JSON: Expecting property name enclosed in double quotes at column 2."),
])
def test_a_bad_job_line_is_one_error_row_and_the_good_ones_stay(inputs, tmp_path, line, message):
    from emocast.batch import read_jobs

    path = write_jobs(inputs / "check.jsonl", [job("good"), line, job("also-good", seed=3)])
    jobs, bad = read_jobs(path, Namespace(**base_args()))
    assert [j.name for j in jobs] == ["good", "also-good"]
    assert [j.line for j in jobs] == [1, 3]
    assert jobs[1].args.seed == 3 and jobs[0].args.seed == 42 and jobs[0].args.steps == 1  # job keys over CLI
    assert jobs[0].args.image == str(inputs / "face.png")  # relative to the jobs file
    assert len(bad) == 1 and bad[0]["status"] == "error" and bad[0]["line"] == 2
    assert bad[0]["error"].startswith(message) and "\n" not in bad[0]["error"]


def test_duplicate_names_and_default_names(inputs):
    from emocast.batch import read_jobs

    unnamed = {"image": "face.png", "audio": "speech.wav", "prompt": "happy"}
    path = write_jobs(inputs / "names.jsonl", ["# a comment", "", unnamed, {**unnamed, "prompt": "sad"},
                                               job("same"), job("same", seed=1)])
    jobs, bad = read_jobs(path, Namespace(**base_args()))
    a, b = (j.name for j in jobs[:2])
    assert a.startswith("face_speech_") and b.startswith("face_speech_") and a != b  # one per emotion
    assert read_jobs(path, Namespace(**base_args()))[0][0].name == a  # stable: a rerun finds the same outputs
    assert [r["error"] for r in bad] == ["duplicate name 'same' (also line 5)."]


def test_an_emotion_schedule_job_reads_its_file(inputs):
    from emocast.batch import read_jobs
    from emocast.emotion.schedule import EmotionSchedule

    (inputs / "calm_then_angry.txt").write_text("0.0: A person is talking calmly.\n0.1 @1.5: Furious.\n")
    schedule = {"image": "face.png", "audio": "speech.wav", "emotion_schedule": "calm_then_angry.txt"}
    path = write_jobs(inputs / "schedule.jsonl", [{**schedule, "name": "s"},
                                                  {**schedule, "name": "t", "emotion_schedule": "nope.txt"}])
    jobs, bad = read_jobs(path, Namespace(**base_args()))
    assert isinstance(jobs[0].emotion, EmotionSchedule) and len(jobs[0].emotion.keyframes) == 2
    assert bad[0]["name"] == "t" and bad[0]["error"].startswith("emotion schedule file not found:")


def test_ray_without_ray_installed_is_a_clear_error(inputs, tmp_path, monkeypatch, capsys):
    from emocast import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    path = write_jobs(tmp_path / "jobs.jsonl", [job("a")])
    assert cli.main(["batch", str(path), "--out", str(tmp_path / "out"), "--ray", "local"]) == 2
    err = capsys.readouterr().err
    assert "error: --ray needs Ray, which is not installed." in err and 'pip install "ray>=2.9"' in err
    assert not (tmp_path / "out").exists()


def test_a_cluster_nobody_runs_is_a_clear_error_in_seconds(inputs, tmp_path, capsys):
    pytest.importorskip("ray")
    from emocast import cli

    path = write_jobs(tmp_path / "jobs.jsonl", [job("a", image=str(inputs / "face.png"),
                                                     audio=str(inputs / "speech.wav"))])
    t0 = time.monotonic()
    assert cli.main(["batch", str(path), "--out", str(tmp_path / "out"), "--models", str(tmp_path),
                     "--ray", "127.0.0.1:1"]) == 2
    assert "error: could not join the Ray cluster at '127.0.0.1:1': Connection refused." in capsys.readouterr().err
    assert time.monotonic() - t0 < 30


# --- in this process: the models loaded once, the frames of `generate`, Ctrl-C, resume ---------------------------

@pytest.mark.slow
def test_in_process_batch_interrupted_resumed_and_equal_to_generate(inputs, models, tmp_path):
    from emocast import cli

    out = tmp_path / "out"
    path = write_jobs(inputs / "local.jsonl", [job("first"), job("second", seed=7), job("noface", image="blank.png"),
                                               job("badaudio", audio="broken.wav")])
    cmd = ["batch", str(path), "--out", str(out), "--models", str(models), *FAST]
    # Ctrl-C while the second job runs: rc 130, the first job reported, nothing half-written
    proc = subprocess.Popen([sys.executable, "-m", "emocast", *cmd], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("[1/4] first: ok"):
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            break
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, err[-2000:]
    assert "interrupted: 1 of 4 jobs reported, 3 left" in err and "Traceback" not in err
    assert [r["name"] for r in report(out)] == ["first"]
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4", "report.jsonl"]

    # the same command again: the first skipped, the rest run; bad jobs are one line each and the others go on
    assert cli.main(cmd) == 1
    rows = last_run(out)
    assert {n: r["status"] for n, r in rows.items()} == {"first": "skipped", "second": "ok", "noface": "error",
                                                         "badaudio": "error"}
    assert rows["noface"]["error"].startswith("no face found in the 256x256 reference image")
    assert rows["badaudio"]["error"].startswith("could not decode the audio file broken.wav")
    assert rows["second"]["frames"] == 5 and rows["second"]["device"] == "cpu" and rows["second"]["attempts"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4", "report.jsonl", "second.mp4"]

    # the frames `generate` makes for the same job and seed. Not compared bit for bit: two `generate` runs of one
    # job in one process differ by up to ~40 levels in a frame or two here (mean 0.3-0.6; the sampler's own
    # output repeats exactly), while another seed differs by ~55 on average.
    single = tmp_path / "single.mp4"
    assert cli.main(["generate", "--image", str(inputs / "face.png"), "--audio", str(inputs / "speech.wav"),
                     "--prompt", job("x")["prompt"], "--models", str(models), "--out", str(single),
                     "--seed", "7", *FAST]) == 0
    a, b = frames(out / "second.mp4"), frames(single)
    assert a.shape == (5, 64, 64, 3) and a.std() > 10
    same, other = np.abs(a.astype(int) - b).mean(), np.abs(a.astype(int) - frames(out / "first.mp4")).mean()
    assert same < 2 and other > 20, (same, other)


# --- on a local Ray cluster: 2 workers, a bad job, a worker killed mid-job, then resume --------------------------

@pytest.mark.slow
def test_ray_cluster_runs_the_good_jobs_survives_a_killed_worker_and_resumes(inputs, models, tmp_path):
    pytest.importorskip("ray")
    psutil = pytest.importorskip("psutil")

    out = tmp_path / "out"
    path = write_jobs(inputs / "ray.jsonl", [job("a"), job("b", seed=7), job("noface", image="blank.png"),
                                             job("c", seed=3)])
    cmd = ["batch", str(path), "--out", str(out), "--models", str(models), *FAST, "--ray", "local",
           "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "emocast", *cmd], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed, deadline = None, time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                running = " ".join(child.cmdline()).startswith("ray::Worker.run_bytes")
            except psutil.Error:
                continue
            if running:  # a worker process in the middle of a job: kill -9
                child.kill()
                killed = child.pid
                break
        time.sleep(0.02)
    log, _ = proc.communicate(timeout=400)
    assert killed is not None, log[-3000:]
    assert proc.returncode == 1, log[-3000:]  # 1: some job failed (the faceless one)
    rows = last_run(out)
    assert {n: r["status"] for n, r in rows.items()} == {"a": "ok", "b": "ok", "c": "ok", "noface": "error"}
    assert rows["noface"]["error"].startswith("no face found in the 256x256 reference image")
    assert sorted(r["attempts"] for r in rows.values()) == [1, 1, 1, 2]  # the killed job, retried once
    assert "died" in log and "retrying it on a new worker (attempt 2 of 3)" in log
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4", "c.mp4", "report.jsonl"]
    assert not any(r["worker"].endswith(f":{killed}") for r in rows.values())  # its job finished elsewhere
    assert all(frames(out / f"{n}.mp4").shape == (5, 64, 64, 3) for n in "abc")

    # the same command again recomputes nothing (the faceless job is tried again: it has no output)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}
    again = run_cli(*cmd)
    assert again.returncode == 1, again.stderr[-3000:]
    rows = last_run(out)
    assert {n: r["status"] for n, r in rows.items()} == {"a": "skipped", "b": "skipped", "c": "skipped",
                                                         "noface": "error"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes
