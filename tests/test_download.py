"""emocast.download against a local HTTP server on 127.0.0.1 posing as the Hugging Face hub.

The server answers as the hub does for an LFS file: HEAD / GET `/{repo}/resolve/{rev}/{file}` -> 302 to a CDN
URL, with X-Linked-Etag (the sha256), X-Linked-Size and X-Repo-Commit; the CDN URL serves the bytes with
Range support. It can serve bytes that do not match the published sha256, or drop the connection halfway.
"""
from __future__ import annotations

import hashlib
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from emocast import download as dl
from emocast import model_files as mf
from emocast.cli import main
from emocast.errors import CheckpointError, MissingModelError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}     # "repo/file" -> bytes served
        self.published: dict[str, bytes] = {}  # "repo/file" -> bytes whose sha256 / size the hub announces
        self.drop_first: set[str] = set()      # keys whose first full GET stops halfway
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, body: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range", "")))
                parts = self.path.lstrip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    key = f"{parts[0]}/{parts[1]}/{'/'.join(parts[4:])}"
                    if key not in hub.files:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        return self.end_headers()
                    ref = hub.published.get(key, hub.files[key])
                    self.send_response(302)
                    self.send_header("Location", f"/cdn/{key}")
                    self.send_header("X-Linked-Etag", f'"{hashlib.sha256(ref).hexdigest()}"')
                    self.send_header("ETag", '"abc123"')
                    self.send_header("X-Linked-Size", str(len(ref)))
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if parts[0] == "cdn":
                    data = hub.files["/".join(parts[1:])]
                    return self._bytes(data, "/".join(parts[1:]), body)
                if parts[0] == "plain":
                    return self._bytes(hub.files[parts[1]], parts[1], body)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _bytes(self, data: bytes, key: str, body: bool):
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                if key in hub.drop_first and not start:
                    hub.drop_first.discard(key)
                    self.wfile.write(data[:len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def do_HEAD(self):
                self._answer(False)

            def do_GET(self):
                self._answer(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=lambda: self.server.serve_forever(poll_interval=0.05), daemon=True).start()

    def ranges(self):
        return [r for _, _, r in self.requests if r]


@pytest.fixture
def hub(monkeypatch):
    server = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the test environment sets it; these tests opt in
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.server.shutdown()
    server.server.server_close()


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


VAE = next(r for r in mf.REMOTES if r.part == "vae")
W2V = next(r for r in mf.REMOTES if r.part == "wav2vec2")


def serve(hub: FakeHub, remote: mf.Remote, data: bytes) -> None:
    hub.files[f"{remote.repo}/{remote.file}"] = data


def test_good_file_lands_under_its_final_name(hub, tmp_path):
    data = payload(300_000)
    serve(hub, VAE, data)
    seen = []
    path = dl.fetch(VAE, tmp_path / VAE.dest, lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors"
    assert path.read_bytes() == data
    assert not list(tmp_path.rglob("*.part"))
    assert seen[-1] == (len(data), len(data)) and len(seen) >= 1
    assert ("HEAD", f"/{VAE.repo}/resolve/main/{VAE.file}", "") in hub.requests
    # present: not fetched again
    n = len(hub.requests)
    assert dl.fetch(VAE, path) == path and len(hub.requests) == n


def test_corrupted_file_is_refused_and_removed(hub, tmp_path):
    good = payload(200_000)
    serve(hub, VAE, good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit off
    hub.published[f"{VAE.repo}/{VAE.file}"] = good
    with pytest.raises(CheckpointError, match="sha256") as e:
        dl.fetch(VAE, tmp_path / VAE.dest)
    assert "removed" in e.value.message
    assert not (tmp_path / VAE.dest).exists()
    assert not list(tmp_path.rglob("*.part"))


def test_interrupted_download_resumes_with_range(hub, tmp_path):
    data = payload(500_000, seed=3)
    serve(hub, W2V, data)
    hub.drop_first.add(f"{W2V.repo}/{W2V.file}")
    path = dl.fetch(W2V, tmp_path / W2V.dest)
    assert path.name == "wav2vec2-base-960h.safetensors" and path.parent.name == "audio_encoders"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert hub.ranges() == [f"bytes={len(data) // 2}-"]  # resumed where the connection dropped


def test_part_left_by_an_earlier_run_is_resumed(hub, tmp_path):
    data = payload(400_000, seed=5)
    serve(hub, VAE, data)
    dest = tmp_path / VAE.dest
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(data[:123_456])
    dl.fetch(VAE, dest)
    assert dest.read_bytes() == data
    assert hub.ranges() == ["bytes=123456-"]


def test_plain_url_checked_by_size(hub, tmp_path):
    data = payload(50_000, seed=7)
    hub.files["face_landmarker.task"] = data
    remote = mf.Remote("landmarker", mf.LANDMARKER, "mediapipe/face_landmarker.task",
                       url=f"{hub.url}/plain/face_landmarker.task")
    assert dl.fetch(remote, tmp_path / remote.dest).read_bytes() == data


def test_missing_file_names_url_and_folder(hub, tmp_path):
    with pytest.raises(MissingModelError, match="HTTP 404") as e:
        dl.fetch(VAE, tmp_path / VAE.dest)
    assert f"{hub.url}/{VAE.repo}/resolve/main/{VAE.file}" in e.value.message
    assert str(tmp_path / "vae") in e.value.hint


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_server_is_one_line_with_url_and_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert main(["download-models", "--models", str(tmp_path), "--only", "vae"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: cannot download http://127.0.0.1:") and VAE.file in err[0]
    assert err[1].startswith("hint: Download ") and str(tmp_path / "vae") in err[1]
    assert not any(tmp_path.rglob("*.safetensors*"))


def test_offline_env_refuses(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingModelError, match="HF_HUB_OFFLINE"):
        dl.fetch(VAE, tmp_path / VAE.dest)


def test_cli_downloads_parts_into_the_readme_layout(hub, tmp_path, capsys):
    for r in mf.remotes({"clip", "wav2vec2", "insightface"}):
        serve(hub, r, payload(10_000 + len(r.file), seed=len(r.dest)))
    assert main(["download-models", "--models", str(tmp_path), "--only", "clip,wav2vec2,insightface"]) == 0
    got = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert got == sorted(["text_encoders/clip_l.safetensors", "audio_encoders/wav2vec2-base-960h.safetensors"]
                         + [f"insightface/models/antelopev2/{f}" for f in mf._ANTELOPE])
    assert main(["download-models", "--models", str(tmp_path), "--only", "clip"]) == 0
    assert "present" in capsys.readouterr().out
    assert main(["download-models", "--models", str(tmp_path), "--only", "bogus"]) == 2


def test_download_models_help_lists_parts(capsys):
    with pytest.raises(SystemExit):
        main(["download-models", "--help"])
    out = capsys.readouterr().out
    assert "net,vae,clip,wav2vec2,insightface,landmarker" in out and os.linesep in out


# ---------------------------------------------------------------------------------------------- the nodes' toggle

@pytest.fixture
def node_pack(tmp_path):
    """The pack loaded under its own name against a stand-in host with an empty models folder."""
    from comfy_host import StubHost
    from pack_fixtures import ROOT, load_pack

    stub = StubHost().install(tmp_path / "models", tmp_path / "output")
    pack = load_pack(f"emocast_dl_pack_{tmp_path.name}", ROOT)
    yield pack, stub, tmp_path / "models"
    stub.uninstall()


def test_loader_toggle_downloads_with_the_progress_bar(hub, node_pack):
    import importlib

    pack, stub, models = node_pack
    host = importlib.import_module(f"{pack.__name__}.nodes.host")
    errors = importlib.import_module(f"{pack.__name__}.emocast.errors")
    data = payload(2_500_000, seed=11)  # 3 chunks of 1 MiB
    serve(hub, VAE, data)
    name = "vae-ft-mse-840000-ema-pruned.safetensors"
    node = pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadVAE"]
    assert node.INPUT_TYPES()["required"]["vae_name"][0] == [name]  # offered before it is there
    assert node.INPUT_TYPES()["optional"]["download_if_missing"][1]["default"] is False
    with pytest.raises(errors.MissingModelError) as e:  # off by default: nothing is fetched
        host.resolve_file(host.model_files.VAE, name)
    assert "download_if_missing" in e.value.hint and "emocast doctor" in e.value.hint
    assert not hub.requests
    path = host.resolve_file(host.model_files.VAE, name, True)
    assert path == models / "vae" / name and path.read_bytes() == data
    bars = [p for p in stub.progress]
    assert bars and bars[-1][1:3] == (len(data), len(data)) and 2 <= len(bars) <= 202
    # the node itself: the toggle downloads, then the loader reads the file (random bytes: a CheckpointError)
    serve(hub, mf.REMOTES[0], payload(1000))
    with pytest.raises(errors.CheckpointError):
        pack.NODE_CLASS_MAPPINGS["EmoCAST_LoadModel"]().load("net.pth", "fp32", download_if_missing=True)
    assert (models / "emocast" / "net.pth").is_file()


def test_face_toggle_downloads_the_antelopev2_folder(hub, node_pack):
    import importlib

    pack, stub, models = node_pack
    host = importlib.import_module(f"{pack.__name__}.nodes.host")
    for r in mf.remotes({"insightface"}):
        serve(hub, r, payload(5000, seed=len(r.file)))
    assert host.insightface_packs() == ["antelopev2"]
    folder = host.resolve_pack("antelopev2", True)
    assert folder == models / "insightface" / "models" / "antelopev2"
    assert sorted(p.name for p in folder.iterdir()) == sorted(mf._ANTELOPE)
