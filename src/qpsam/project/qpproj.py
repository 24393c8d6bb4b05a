"""The JSON files of a QuPath project (0.3 to 0.7): ``project.qpproj``, ``classifiers/classes.json``,
``data/<id>/server.json`` and ``data/<id>/summary.json``.

Files are read into plain dicts and written back with every field kept, known or not, in QuPath's layout (Gson's
pretty printing, which matches ``json.dumps(indent=2)``; files QuPath writes compact stay compact). Writes are
atomic (temporary file, then rename) and keep the previous ``project.qpproj`` as ``project.qpproj.backup``, as
QuPath does.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import quote, unquote, urlparse

from qpsam.colors import pack_argb, unpack_argb
from qpsam.errors import ProjectError
from qpsam.fileio import atomic_write
from qpsam.objects import PathClass

__all__ = [
    "PROJECT_FILE",
    "read_bytes",
    "read_json",
    "write_json",
    "new_project_json",
    "new_entry_json",
    "builder_uri",
    "image_builder",
    "new_image_builder",
    "BIOFORMATS_BUILDER",
    "OPENSLIDE_BUILDER",
    "set_builder_uri",
    "builder_metadata",
    "uri_to_path",
    "path_to_uri",
    "read_classes",
    "write_classes",
    "project_file",
    "version_tuple",
]

PROJECT_FILE = "project.qpproj"
DEFAULT_VERSION = "0.6.0"
#: QuPath's server builders for an image file: Bio-Formats in general, OpenSlide for whole-slide formats.
BIOFORMATS_BUILDER = "qupath.lib.images.servers.bioformats.BioFormatsServerBuilder"
OPENSLIDE_BUILDER = "qupath.lib.images.servers.openslide.OpenslideServerBuilder"
_OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn")


def project_file(path: str | os.PathLike[str]) -> Path:
    """``project.qpproj`` for a project folder or the file itself."""
    path = Path(path)
    return path if path.suffix == ".qpproj" else path / PROJECT_FILE


def read_bytes(path: Path, what: str = "file") -> bytes:
    """The bytes of a project file; a missing or unreadable one raises :class:`ProjectError` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProjectError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ProjectError(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc


def read_json(path: Path, what: str = "file") -> Any:
    """A JSON file as Python values; errors name the file."""
    raw = read_bytes(path, what)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ProjectError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ProjectError(f"{path}: {what} is nested too deeply to be read") from None
    except ValueError as exc:
        raise ProjectError(f"{path}: {what} is not valid JSON ({exc})") from exc


def _style(path: Path) -> bool:
    """True when an existing file is pretty-printed (or does not exist yet)."""
    try:
        with path.open("rb") as fh:
            return b"\n" in fh.read(4096)
    except OSError:
        return True


def dumps(value: Any, pretty: bool = True) -> str:
    if pretty:
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def write_json(path: Path, value: Any, *, backup: bool = False, pretty: bool | None = None) -> None:
    """Write JSON atomically, keeping the layout of the file it replaces; optionally keep ``<name>.backup``."""
    text = dumps(value, _style(path) if pretty is None else pretty)
    if not path.parent.is_dir():
        raise ProjectError(f"{path}: folder {path.parent} does not exist")

    def same(tmp: Path) -> None:
        if json.loads(tmp.read_text(encoding="utf-8")) != value:
            raise ProjectError(f"{path}: the written JSON does not read back the same")

    atomic_write(path, text, backup=backup, verify=same)


def new_project_json(project_path: Path, version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """The contents of an empty ``project.qpproj``."""
    now = int(time.time() * 1000)
    return {
        "version": version,
        "createTimestamp": now,
        "modifyTimestamp": now,
        "uri": path_to_uri(project_path),
        "lastID": 0,
        "images": [],
    }


def new_entry_json(entry_id: int, name: str, builder: Mapping[str, Any], version: str) -> dict[str, Any]:
    """An image entry as QuPath writes it (``tags`` from 0.6)."""
    entry: dict[str, Any] = {
        "serverBuilder": dict(builder),
        "entryID": entry_id,
        "randomizedName": str(uuid.uuid4()),
        "imageName": name,
        "metadata": {},
    }
    if version_tuple(version) >= (0, 6):
        entry["tags"] = []
    return entry


def version_tuple(text: str | None) -> tuple[int, ...]:
    out = []
    for piece in str(text or "0").split("-")[0].split("."):
        if not piece.isdigit():
            break
        out.append(int(piece))
    return tuple(out) or (0,)


def _uri_builders(builder: Any) -> Iterator[dict[str, Any]]:
    """Every ``uri`` builder inside a (possibly wrapping) server builder."""
    if not isinstance(builder, dict):
        return
    if "uri" in builder and isinstance(builder.get("uri"), str):
        yield builder
    for key in ("builder", "builders"):
        inner = builder.get(key)
        if isinstance(inner, list):
            for item in inner:
                yield from _uri_builders(item)
        else:
            yield from _uri_builders(inner)
    for region in builder.get("regions", []) or []:
        if isinstance(region, dict):
            yield from _uri_builders(region.get("builder") or region.get("serverBuilder"))


def image_builder(builder: Any) -> dict[str, Any] | None:
    """The ``uri`` builder of the image file inside a (possibly wrapping) server builder (the first one)."""
    return next(_uri_builders(builder), None)


def new_image_builder(path: Path, series: int, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``uri`` server builder QuPath writes for an image file (OpenSlide for whole-slide formats, else
    Bio-Formats with its ``--series``), with the image's server ``metadata``."""
    provider = OPENSLIDE_BUILDER if path.suffix.lower() in _OPENSLIDE_SUFFIXES else BIOFORMATS_BUILDER
    return {"builderType": "uri", "providerClassName": provider, "uri": path_to_uri(path),
            "args": ["--series", str(series)] if provider == BIOFORMATS_BUILDER else [], "metadata": metadata}


def builder_uri(builder: Any) -> str | None:
    """The image URI of a server builder (the first one, for builders that wrap others)."""
    return next((b["uri"] for b in _uri_builders(builder)), None)


def set_builder_uri(builder: Any, old: str, new: str) -> int:
    """Replace URI ``old`` by ``new`` in a server builder (all nested builders); returns how many changed."""
    count = 0
    for b in _uri_builders(builder):
        if b["uri"] == old:
            b["uri"] = new
            count += 1
    return count


def builder_metadata(builder: Any) -> dict[str, Any] | None:
    """The ``metadata`` block of a server builder (outermost first). A rotation, flip or crop written without its
    own block (QuPath's rotate-on-import builder) reports the wrapped image's block turned as the wrapper turns it."""
    if not isinstance(builder, dict):
        return None
    if isinstance(builder.get("metadata"), dict):
        return builder["metadata"]
    inner = builder_metadata(builder.get("builder"))
    if inner is not None and builder.get("builderType") in ("rotated", "flipped", "cropped"):
        from .transforms import parse_wrapper, transform_metadata

        try:
            return transform_metadata(inner, parse_wrapper(builder))
        except ProjectError:
            return inner
    return inner


def uri_to_path(uri: str) -> Path | None:
    """A local file path for a ``file:`` URI (None for other schemes)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        return None
    path = unquote(parsed.path)
    if parsed.netloc and parsed.netloc not in ("", "localhost"):
        path = f"//{parsed.netloc}{path}"
    if os.name == "nt" and len(path) > 2 and path[0] == "/" and path[2] == ":":
        path = path[1:]
    return Path(path)


def path_to_uri(path: Path) -> str:
    """A ``file:`` URI as Java's ``File.toURI()`` writes it (``file:/abs/path``, spaces escaped)."""
    absolute = Path(path).absolute().as_posix()
    if not absolute.startswith("/"):
        absolute = "/" + absolute
    return "file:" + quote(absolute, safe="/:@!$&'()*+,;=-._~")


def read_classes(path: Path) -> tuple[list[PathClass], dict[str, Any]]:
    """Path classes from ``classifiers/classes.json`` (and the whole JSON, to keep unknown fields)."""
    data = read_json(path, "class list")
    if not isinstance(data, dict) or not isinstance(data.get("pathClasses", []), list):
        raise ProjectError(f"{path}: expected an object with a 'pathClasses' list")
    out = []
    for i, item in enumerate(data.get("pathClasses", [])):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ProjectError(f"{path}: pathClasses[{i}] has no name")
        color = item.get("color")
        out.append(PathClass(item["name"], unpack_argb(color) if isinstance(color, int) else None))
    return out, data


def write_classes(path: Path, classes: list[PathClass], original: Mapping[str, Any] | None = None) -> None:
    """Write ``classes.json`` keeping unknown fields (of the file and of classes that are kept)."""
    data = dict(original or {})
    old = {c.get("name"): c for c in data.get("pathClasses", []) if isinstance(c, dict)}
    items = []
    for pc in classes:
        item = dict(old.get(pc.name, {}))
        item["name"] = pc.name
        if pc.color is not None:
            item["color"] = pack_argb(pc.color[:3])  # classes.json holds opaque colours
        items.append(item)
    data["pathClasses"] = items
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, data)
