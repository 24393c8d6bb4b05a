"""Fetching and checking weights files: resumable downloads through ``<file>.part``, SHA-256 of large files.

Downloads stream into ``<file>.part``, resume with an HTTP ``Range`` request, check size and SHA-256 and only
then rename into place: a file that looks complete is complete. This module does not import torch.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlparse

from ..._version import __version__
from ...errors import WeightsError
from ...types import Progress

__all__ = [
    "Downloaded",
    "download",
    "copy_hashing",
    "direct_url",
    "file_sha256",
    "file_sha256_cached",
    "verify_file",
]


@dataclass(frozen=True)
class Downloaded:
    """A finished download: where it is, its SHA-256 and its size."""

    path: Path
    sha256: str
    size: int


# -------------------------------------------------------------------------------------------------------- hashing


def _iter_file(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            yield block


def file_sha256(path: str | os.PathLike[str], progress: Progress | None = None) -> str:
    """SHA-256 (hex) of a file."""
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    for block in _iter_file(path):
        digest.update(block)
        done += len(block)
        if progress:
            progress(done, total)
    return digest.hexdigest()


def verify_file(path: str | os.PathLike[str], sha256: str | None = None, size: int | None = None) -> None:
    """Raise :class:`WeightsError` when ``path`` is missing, has the wrong size or the wrong SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    actual = path.stat().st_size
    if size is not None and actual != size:
        kind = "truncated" if actual < size else "too large"
        raise WeightsError(f"weights file {path} is {kind}: {actual} bytes, expected {size}")
    if sha256 is not None:
        digest = file_sha256_cached(path)
        if digest != sha256.lower():
            raise WeightsError(f"weights file {path} fails its checksum: SHA-256 {digest}, expected {sha256}")


_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_sha256_cached(path: Path) -> str:
    """:func:`file_sha256`, remembered per (path, size, mtime) in this process (large weights are GBs)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    digest = file_sha256(path)
    with _HASH_LOCK:
        _HASHES[key] = digest
    return digest


# ---------------------------------------------------------------------------------------------------- downloads


def direct_url(url: str) -> str:
    """Turn web-page links of Hugging Face and Google Drive into direct download links."""
    parsed = urlparse(url)
    if parsed.netloc == "huggingface.co":
        parts = parsed.path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] in ("blob", "raw"):
            parts[2] = "resolve"
            return parsed._replace(path="/" + "/".join(parts)).geturl()
    if parsed.netloc == "drive.google.com":
        match = re.search(r"/file/d/([^/]+)", parsed.path)
        file_id = match.group(1) if match else next(iter(parse_qs(parsed.query).get("id") or []), None)
        if file_id:
            return f"https://drive.google.com/uc?export=download&confirm=t&id={file_id}"
    return url


def _request_headers(url: str, start: int) -> dict[str, str]:
    headers = {"User-Agent": f"qpsam/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    token = os.environ.get("HF_TOKEN")
    if token and urlparse(url).netloc.endswith("huggingface.co"):
        headers["Authorization"] = f"Bearer {token}"
    return headers


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    timeout: float = 60.0,
) -> Downloaded:
    """Download ``url`` to ``dest``: resumable through ``dest.part``, checked, then renamed into place.

    An interrupted download keeps its ``.part`` file and the next call asks the server for the rest
    (HTTP ``Range``). A wrong size or SHA-256 deletes the partial file. ``progress(done, total)`` gets byte
    counts (``total`` 0 when the server does not say); setting ``cancel`` stops the download (resumable).
    """
    import httpx

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = direct_url(url)
    start = part.stat().st_size if part.is_file() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    digest = hashlib.sha256()
    total = 0
    stale = False
    try:
        with httpx.stream(
            "GET", url, headers=_request_headers(url, start), follow_redirects=True, timeout=timeout
        ) as response:
            status = response.status_code
            if status == 416 and start:
                # Complete only if the server's size equals what we hold; otherwise the part file is stale.
                match = re.match(r"bytes\s+\*/(\d+)", response.headers.get("content-range", ""))
                if not match or int(match.group(1)) != start:
                    stale = True
                else:
                    total = start
            elif status in (200, 206):
                offset = 0
                if status == 206:
                    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
                    if not match:
                        raise WeightsError(f"download of {url}: the server sent a partial answer without a range")
                    offset = int(match.group(1))
                    total = int(match.group(3)) if match.group(3) != "*" else 0
                    if offset != start:
                        raise WeightsError(
                            f"download of {url}: asked to resume at byte {start}, the server answered at {offset}"
                        )
                else:
                    start = 0  # the server ignored Range: start again
                    length = response.headers.get("content-length")
                    total = int(length) if length and length.isdigit() else 0
                if size is not None and total and total != size:
                    part.unlink(missing_ok=True)
                    raise WeightsError(
                        f"download of {url}: the server offers {total} bytes, expected {size}; wrong file?"
                    )
                if start:
                    for block in _iter_file(part):
                        digest.update(block)
                done = start
                with open(part, "ab" if start else "wb") as fh:
                    for block in response.iter_bytes():
                        if cancel is not None and cancel.is_set():
                            raise WeightsError(f"download of {url} cancelled; run again to resume")
                        fh.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            else:
                raise WeightsError(f"download of {url} failed: HTTP {status} {response.reason_phrase}")
    except httpx.HTTPError as exc:
        kept = part.stat().st_size if part.is_file() else 0
        hint = f"; {kept} bytes kept in {part}, run again to resume" if kept else ""
        raise WeightsError(f"could not download {url}: {type(exc).__name__}: {exc}{hint}") from exc
    if stale:
        part.unlink(missing_ok=True)  # longer than the remote file: not a prefix of it, start over once
        return download(url, dest, sha256=sha256, size=size, progress=progress, cancel=cancel, timeout=timeout)
    got = part.stat().st_size if part.is_file() else 0
    if total and got < total:
        raise WeightsError(f"download of {url} ended at {got} of {total} bytes; run again to resume")
    if status == 416:
        digest = hashlib.sha256()
        for block in _iter_file(part):
            digest.update(block)
    hexdigest = digest.hexdigest()
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise WeightsError(f"download of {url} gave {got} bytes, expected {size}")
    if sha256 is not None and hexdigest != sha256.lower():
        part.unlink(missing_ok=True)
        raise WeightsError(f"download of {url} fails its checksum: SHA-256 {hexdigest}, expected {sha256}")
    os.replace(part, dest)
    return Downloaded(dest, hexdigest, got)


def copy_hashing(src: Path, dest: Path, progress: Progress | None) -> Downloaded:
    """Copy ``src`` to ``dest`` through ``dest.part``, hashing on the way (one read of a file of GBs)."""
    part = dest.with_name(dest.name + ".part")
    total = src.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(part, "wb") as out:
        for block in _iter_file(src):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    os.replace(part, dest)
    return Downloaded(dest, digest.hexdigest(), done)
