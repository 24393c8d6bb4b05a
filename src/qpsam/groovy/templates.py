"""Standalone scripts: the GeoJSON import scripts kept as files, with their marked values filled in.

The files live in the top-level ``groovy/`` folder and ship as the package data ``qpsam/groovy_templates`` (a link
to that folder in the source tree). :func:`import_script` imports one GeoJSON file into the open image;
:func:`project_import_script` imports each entry's file into every image of a project.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from ..errors import ScriptError
from .literals import literal

__all__ = ["TEMPLATES", "fill_template", "import_script", "project_import_script", "template_path", "template_text"]

TEMPLATES = ("import_geojson.groovy", "import_geojson_project.groovy")
_FILL_IN = re.compile(r"^def (?P<name>\w+) = (?P<value>.*?)(?P<comment>\s*// FILL IN:.*)$")


def template_path(name: str) -> Path:
    """Where a standalone script lies (``groovy/`` of the source tree, packaged as ``qpsam/groovy_templates``)."""
    if name not in TEMPLATES:
        raise ScriptError(f"no Groovy template {name!r}; templates: {', '.join(TEMPLATES)}")
    packaged = Path(str(resources.files("qpsam") / "groovy_templates" / name))
    if packaged.is_file():
        return packaged
    # A source checkout where the groovy_templates link to ../../groovy was not made (symlinks off on Windows).
    source = Path(__file__).resolve().parents[3] / "groovy" / name
    return source if source.is_file() else packaged


def template_text(name: str) -> str:
    """The text of a standalone script as it ships, its ``// FILL IN`` values at their defaults."""
    path = template_path(name)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScriptError(f"cannot read Groovy template {path}: {exc}") from exc



def fill_template(name: str, **values: object) -> str:
    """A standalone script with the values of its ``// FILL IN`` lines replaced (others keep their default)."""
    lines = template_text(name).splitlines()
    seen = set()
    for i, line in enumerate(lines):
        match = _FILL_IN.match(line)
        if match and match["name"] in values:
            key = match["name"]
            lines[i] = f"def {key} = {literal(values[key], key)}{match['comment']}"
            seen.add(key)
    unknown = sorted(set(values) - seen)
    if unknown:
        raise ScriptError(f"template {name} has no fill-in value named {', '.join(unknown)}")
    return "\n".join(lines) + "\n"


_REMOVE_MODES = ("none", "same-id", "all")


def _check_remove(remove: str) -> str:
    if remove not in _REMOVE_MODES:
        raise ScriptError(f"remove must be one of {', '.join(_REMOVE_MODES)}, got {remove!r}")
    return remove


def import_script(geojson_path: str | Path, *, remove: str = "same-id", nest: bool = False) -> str:
    """A script importing one GeoJSON file into the image open in QuPath.

    ``remove``: ``same-id`` first removes objects whose id is in the file (importing twice replaces), ``all``
    clears the image, ``none`` only adds. ``nest`` re-nests objects by geometry (QuPath's resolveHierarchy).
    A relative path is read from the project's folder.
    """
    return fill_template(
        "import_geojson.groovy",
        geojsonFile=Path(geojson_path).as_posix() if isinstance(geojson_path, Path) else str(geojson_path),
        removeBeforeImport=_check_remove(remove),
        nestObjects=bool(nest),
    )


def project_import_script(
    geojson_folder: str | Path = "qpsam/geojson",
    *,
    file_name: str = "{id}.geojson",
    remove: str = "same-id",
    nest: bool = False,
) -> str:
    """A script for ``QuPath script -p project.qpproj -s script.groovy`` importing each entry's GeoJSON.

    ``file_name`` names each entry's file: ``{id}`` is the entry id, ``{name}`` the image name. A relative
    folder is read from the project's folder.
    """
    if "{id}" not in file_name and "{name}" not in file_name:
        raise ScriptError(f"file_name {file_name!r} must contain {{id}} or {{name}} to tell the images apart")
    folder = geojson_folder.as_posix() if isinstance(geojson_folder, Path) else str(geojson_folder)
    return fill_template(
        "import_geojson_project.groovy",
        geojsonFolder=folder,
        fileNamePattern=file_name,
        removeBeforeImport=_check_remove(remove),
        nestObjects=bool(nest),
    )

