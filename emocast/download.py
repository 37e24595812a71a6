"""Opt-in download of the model files: `python -m emocast download-models` and the loaders' download_if_missing.

Nothing here runs at import or by default. Each file streams from the Hugging Face hub's resolve URL
(`$HF_ENDPOINT`, read at call time, so tests can point it at a local server) into `<name>.part` next to
its final name; an interrupted transfer resumes with an HTTP Range request (within the call, and from a
`.part` an earlier call left); the file is checked against the hub's size and sha256 (an LFS file's ETag is
its sha256) and renamed to its final name only then, so a file under its final name is always complete.
A corrupted file is removed. Non-hub files (mediapipe's .task) get the same treatment, checked by size only.
The standard library's HTTP client is used, so this works wherever Python does; `HF_TOKEN` (or
huggingface_hub's stored token) is sent to the hub for gated repositories.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import urljoin, urlsplit

from . import model_files as mf
from .errors import CheckpointError, MissingModelError

log = logging.getLogger("EmoCAST")

#: progress(done_bytes, total_bytes or 0)
Progress = Callable[[int, int], None]
CHUNK = 1 << 20
ATTEMPTS = 4  # one try and three resumes per file and call
TIMEOUT = 30.0
USER_AGENT = "ComfyUI-EmoCAST"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", mf.HUB).rstrip("/")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def by_hand(url: str, dest: Path) -> str:
    return f"download {url} by hand and save it as {dest.name} in {dest.parent}"


def manual_hint(url: str, dest: Path) -> str:
    hint = by_hand(url, dest)
    return hint[0].upper() + hint[1:] + "."


@dataclass(frozen=True)
class Meta:
    url: str                      # where the bytes are (after the hub's redirect to its CDN)
    size: Optional[int]
    sha256: Optional[str]
    auth: bool                    # send the token (same host as the hub)


class _Interrupted(Exception):
    pass


def _token() -> Optional[str]:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token
        return get_token()
    except Exception:  # not installed, or no stored token
        return None


def _headers(auth: bool, extra: Optional[dict] = None) -> dict:
    h = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(extra or {})}
    token = _token() if auth else None
    if token:
        h["Authorization"] = f"Bearer {token}"
    return h


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # the 3xx arrives as an HTTPError, with the hub's X-Linked-* headers


def _etag_sha256(headers) -> Optional[str]:
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip()
    etag = etag.removeprefix("W/").strip('"').lower()
    return etag if re.fullmatch(r"[0-9a-f]{64}", etag) else None


def _int(value) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def head(url: str, hub: bool, timeout: float = TIMEOUT) -> Meta:
    """Size, sha256 and the download URL of a file, as huggingface_hub reads them (without following the redirect)."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method="HEAD", headers=_headers(hub))
    try:
        with opener.open(request, timeout=timeout) as resp:
            headers, location = resp.headers, None
    except urllib.error.HTTPError as e:
        if not 300 <= e.code < 400 or not e.headers.get("Location"):
            raise
        headers, location = e.headers, urljoin(url, e.headers["Location"])
    size = _int(headers.get("X-Linked-Size")) or (None if location else _int(headers.get("Content-Length")))
    target = location or url
    same_host = urlsplit(target).netloc == urlsplit(url).netloc
    return Meta(target, size, _etag_sha256(headers) if hub else None, hub and same_host)


def _stream(meta: Meta, part: Path, progress: Optional[Progress], timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if meta.size is not None and have > meta.size:
        part.unlink()
        have = 0
    if meta.size is not None and have == meta.size:
        return
    extra = {"Range": f"bytes={have}-"} if have else {}
    request = urllib.request.Request(meta.url, headers=_headers(meta.auth, extra))
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have and meta.size is None:
            return  # the server says the .part already holds everything
        raise
    with resp, open(part, "ab" if have and resp.status == 206 else "wb") as f:
        if resp.status != 206:
            have = 0  # no Range support: start over
        elif have:
            log.info("resuming %s at %d bytes", part.name.removesuffix(".part"), have)
        total = meta.size or (have + (_int(resp.headers.get("Content-Length")) or 0))
        try:
            while chunk := resp.read(CHUNK):
                f.write(chunk)
                have += len(chunk)
                if progress:
                    progress(have, total)
        except (http.client.HTTPException, OSError) as e:  # connection dropped mid-file
            raise _Interrupted(f"{type(e).__name__}: {e}") from e
    if meta.size is not None and have < meta.size:
        raise _Interrupted(f"connection closed at {have} of {meta.size} bytes")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK * 8):
            h.update(chunk)
    return h.hexdigest()


def _verify(part: Path, meta: Meta, url: str, dest: Path) -> None:
    size = part.stat().st_size
    problem = None
    if meta.size is not None and size != meta.size:
        problem = f"{size} bytes, the server announced {meta.size}"
    elif meta.sha256 is not None:
        got = _sha256(part)
        if got != meta.sha256:
            problem = f"sha256 {got}, the hub publishes {meta.sha256}"
    if problem:
        part.unlink()
        raise CheckpointError(f"the download of {url} is corrupted ({problem}); removed it.",
                              hint=f"Run the download again; if it fails again, {by_hand(url, dest)}.")


def fetch(remote: mf.Remote, dest: Path, progress: Optional[Progress] = None, *, endpoint: Optional[str] = None,
          timeout: float = TIMEOUT) -> Path:
    """Download one remote file to `dest` (temp file + rename), verified; an existing `dest` is kept as is."""
    dest = Path(dest)
    if dest.is_file():
        return dest
    url = remote.source_url(endpoint or hub_endpoint())
    if remote.repo and hub_offline():
        raise MissingModelError(f"not downloading {url}: HF_HUB_OFFLINE is set.",
                                hint=f"Unset HF_HUB_OFFLINE to download, or {by_hand(url, dest)}.")
    part = dest.with_name(dest.name + ".part")
    try:
        meta = head(url, bool(remote.repo), timeout)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(ATTEMPTS):
            try:
                _stream(meta, part, progress, timeout)
                break
            except (_Interrupted, urllib.error.URLError, OSError, http.client.HTTPException) as e:
                if isinstance(e, urllib.error.HTTPError) or attempt == ATTEMPTS - 1:
                    raise
                log.warning("download of %s interrupted (%s); resuming", dest.name, e)
    except urllib.error.HTTPError as e:
        why = {401: "not authorised (gated or private: set HF_TOKEN)", 403: "forbidden", 404: "not found"}
        raise MissingModelError(f"cannot download {url}: HTTP {e.code} {why.get(e.code, e.reason)}.",
                                hint=manual_hint(url, dest)) from None
    except (_Interrupted, urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise MissingModelError(f"cannot download {url}: {reason}.", hint=manual_hint(url, dest)) from None
    _verify(part, meta, url, dest)
    os.replace(part, dest)
    return dest


def tqdm_progress(desc: str) -> Progress:
    """A progress callback drawing a tqdm bar (created on the first call, when the total is known)."""
    from tqdm.auto import tqdm

    bars: list = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total or None, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=desc, leave=True))
        bars[0].update(done - bars[0].n)
        if total and done >= total:
            bars[0].close()
    return update


def download_models(models_dir: Path, parts: Optional[Iterable[str]] = None,
                    progress: Optional[Callable[[str], Progress]] = None,
                    endpoint: Optional[str] = None) -> list[tuple[mf.Remote, Path, bool]]:
    """Every remote of `parts` (all by default) into models_dir: [(remote, path, downloaded now)]."""
    done = []
    for remote in mf.remotes(None if parts is None else set(parts)):
        dest = Path(models_dir) / remote.dest
        present = dest.is_file()
        fetch(remote, dest, progress(remote.name) if progress and not present else None, endpoint=endpoint)
        done.append((remote, dest, not present))
    return done


def cli(models: Optional[str], only: Optional[str]) -> int:
    """`python -m emocast download-models`: each file, skipped when present; errors are one line + a hint."""
    from .errors import InputError

    models_dir = Path(models) if models else mf.comfyui_models_dir()
    if models_dir is None:
        raise InputError("no models folder given and no ComfyUI models folder found above this package.",
                         hint="Pass --models DIR (e.g. ComfyUI/models) or set COMFYUI_MODELS.")
    parts = None
    if only:
        parts = [p.strip() for p in only.split(",") if p.strip()]
        unknown = sorted(set(parts) - set(mf.PARTS))
        if unknown:
            raise InputError(f"unknown --only part(s) {', '.join(unknown)}.", hint=f"Choose from {','.join(mf.PARTS)}.")
    for remote, path, new in download_models(models_dir, parts, tqdm_progress):
        print(f"{'downloaded' if new else 'present   '}  {path}")
    return 0
