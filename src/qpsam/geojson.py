"""QuPath-dialect GeoJSON: read and write :class:`~qpsam.objects.PathObject` as QuPath 0.4-0.7 do.

What is written is what QuPath writes and accepts back (``objectType``, ``classification`` with a colour or as a bare
string, ``isLocked`` only when locked, ``measurements`` with non-finite values as strings, a top-level
``nucleusGeometry`` for cells, ``plane`` inside the geometry only when it is not the default plane, ``isEllipse``,
``childObjects`` for children). Reading also accepts the older spellings QuPath accepts (``object_type``, ``type``,
legacy ``colorRGB`` classifications, measurement lists, packed-int colours, ``children``).

Coordinates are written at full precision by default, so a round trip is exact; pass ``precision=2`` to round
as QuPath does.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from qpsam.colors import unpack_argb
from qpsam.errors import GeoJSONError
from qpsam.fileio import atomic_write
from qpsam.objects import ImagePlane, ObjectType, PathClass, PathObject, walk

__all__ = ["from_feature", "to_feature", "loads", "dumps", "read", "write", "OnInvalid"]

OnInvalid = Literal["error", "keep", "fix"]
ON_INVALID = ("error", "keep", "fix")
INT32_MAX = 2**31 - 1  # QuPath keeps planes in Java ints

_TYPE_ALIASES = {
    "annotation": ObjectType.ANNOTATION,
    "detection": ObjectType.DETECTION,
    "cell": ObjectType.CELL,
    "tile": ObjectType.TILE,
    "tmacore": ObjectType.TMA_CORE,
    # QuPath 0.2 put Java class names in these fields.
    "pathannotationobject": ObjectType.ANNOTATION,
    "pathdetectionobject": ObjectType.DETECTION,
    "pathcellobject": ObjectType.CELL,
    "pathtileobject": ObjectType.TILE,
    "tmacoreobject": ObjectType.TMA_CORE,
}
_ALLOWED = (Polygon, MultiPolygon, Point, MultiPoint, LineString)
_NONFINITE_OUT = {math.inf: "Infinity", -math.inf: "-Infinity"}
_NONFINITE_IN = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf, "inf": math.inf, "-inf": -math.inf}


# ---------------------------------------------------------------------------------------------------------------
# Reading


def _where(index: int | None) -> str:
    return "feature" if index is None else f"feature {index}"


def _parse_color(value: Any, what: str, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise GeoJSONError(f"{where}: {what} must be [r, g, b] or a packed integer, got {value!r}")
    if isinstance(value, int):
        # QuPath packs colours as (signed) ARGB integers.
        return unpack_argb(value)
    if isinstance(value, (list, tuple)) and len(value) in (3, 4):
        if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
            return tuple(value)
    raise GeoJSONError(f"{where}: {what} must be [r, g, b] with integers 0..255 or a packed integer, got {value!r}")


def _parse_class(value: Any, where: str) -> PathClass | None:
    if value is None:
        return None
    if isinstance(value, str):
        return PathClass(value) if value.strip() else None
    if not isinstance(value, Mapping):
        raise GeoJSONError(f"{where}: classification must be a string or an object, got {type(value).__name__}")
    if "names" in value:
        names = value["names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise GeoJSONError(f"{where}: classification 'names' must be a non-empty list of strings, got {names!r}")
        name = ": ".join(names)
    elif "name" in value:
        name = value["name"]
        if not isinstance(name, str) or not name.strip():
            raise GeoJSONError(f"{where}: classification 'name' must be a non-empty string, got {name!r}")
    else:
        raise GeoJSONError(f"{where}: classification has neither 'name' nor 'names'")
    color_value = value.get("color", value.get("colorRGB"))
    return PathClass(name, _parse_color(color_value, "classification colour", where))


def _parse_number(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool):
        raise GeoJSONError(f"{where}: measurement {name!r} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        special = _NONFINITE_IN.get(value.strip().lower())
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    if value is None:  # QuPath writes null for NaN in some versions
        return math.nan
    raise GeoJSONError(f"{where}: measurement {name!r} must be a number, got {value!r}")


def _parse_measurements(value: Any, where: str) -> dict[str, float]:
    if value is None:
        return {}
    out: dict[str, float] = {}
    if isinstance(value, Mapping):
        for name, number in value.items():
            out[str(name)] = _parse_number(number, str(name), where)
        return out
    if isinstance(value, list):  # QuPath 0.3's list of {"name", "value"}
        for item in value:
            if not isinstance(item, Mapping) or "name" not in item:
                raise GeoJSONError(f"{where}: measurement list items must be {{'name', 'value'}} objects, got {item!r}")
            name = str(item["name"])
            out[name] = _parse_number(item.get("value"), name, where)
        return out
    raise GeoJSONError(f"{where}: measurements must be an object or a list, got {type(value).__name__}")


def _parse_plane(value: Any, where: str) -> ImagePlane:
    if value is None:
        return ImagePlane()
    if not isinstance(value, Mapping):
        raise GeoJSONError(f"{where}: plane must be an object with c, z, t, got {value!r}")
    found = {}
    for key, default, low in (("c", -1, -1), ("z", 0, 0), ("t", 0, 0)):
        raw = value.get(key, default)
        # QuPath stores planes as Java ints: 2.7 is not a plane (truncating it would move the object), and 2^31
        # does not fit.
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw != raw or raw in (float("inf"),
                                                                                                float("-inf")):
            raise GeoJSONError(f"{where}: plane {key} must be a whole number, got {raw!r}")
        if isinstance(raw, float) and not raw.is_integer():
            raise GeoJSONError(f"{where}: plane {key} must be a whole number, got {raw!r}")
        number = int(raw)
        if not low <= number <= INT32_MAX:
            raise GeoJSONError(f"{where}: plane {key}={number} is outside {low}..{INT32_MAX}")
        found[key] = number
    return ImagePlane(**found)


def _parse_geometry(value: Any, what: str, where: str, on_invalid: OnInvalid) -> BaseGeometry:
    if not isinstance(value, Mapping):
        raise GeoJSONError(f"{where}: {what} must be a GeoJSON geometry object, got {type(value).__name__}")
    gtype = value.get("type")
    clean = {"type": gtype, "coordinates": value.get("coordinates")}
    if gtype == "GeometryCollection":
        raise GeoJSONError(f"{where}: {what} of type GeometryCollection is not supported by QuPath objects")
    try:
        geometry = shape(clean)
    except Exception as exc:  # shapely raises many kinds of errors for malformed coordinates
        raise GeoJSONError(f"{where}: {what} of type {gtype!r} is malformed: {exc}") from exc
    if not isinstance(geometry, _ALLOWED):
        raise GeoJSONError(f"{where}: {what} of type {gtype!r} is not supported (Polygon, MultiPolygon, Point, "
                           "MultiPoint, LineString)")
    if geometry.is_empty:
        raise GeoJSONError(f"{where}: {what} is empty")
    coords = shapely.get_coordinates(geometry)
    if not coords.size or not bool((coords == coords).all()) or not bool(abs(coords).max() < math.inf):
        raise GeoJSONError(f"{where}: {what} has non-finite coordinates")
    if not geometry.is_valid:
        if on_invalid == "error":
            reason = shapely.is_valid_reason(geometry)
            raise GeoJSONError(f"{where}: {what} is invalid ({reason}); pass on_invalid='fix' or 'keep' to accept it")
        if on_invalid == "fix":
            fixed = shapely.make_valid(geometry)
            if isinstance(fixed, shapely.GeometryCollection):
                polys = [g for g in fixed.geoms if isinstance(g, (Polygon, MultiPolygon))]
                fixed = shapely.unary_union(polys) if polys else fixed
            if not isinstance(fixed, _ALLOWED) or fixed.is_empty:
                raise GeoJSONError(f"{where}: {what} is invalid and cannot be repaired")
            geometry = fixed
    return geometry


def from_feature(feature: Any, index: int | None = None, on_invalid: OnInvalid = "error") -> PathObject:
    """One QuPath GeoJSON feature (with its ``childObjects``) as a :class:`PathObject`.

    ``index`` is the feature's position in its file; errors name it.
    """
    where = _where(index)
    if not isinstance(feature, Mapping):
        raise GeoJSONError(f"{where}: expected a GeoJSON Feature object, got {type(feature).__name__}")
    if feature.get("type", "Feature") != "Feature":
        raise GeoJSONError(f"{where}: expected type 'Feature', got {feature.get('type')!r}")
    props = feature.get("properties") or {}
    if not isinstance(props, Mapping):
        raise GeoJSONError(f"{where}: properties must be an object, got {type(props).__name__}")
    if "geometry" not in feature or feature["geometry"] is None:
        raise GeoJSONError(f"{where}: has no geometry")
    raw_geometry = feature["geometry"]
    geometry = _parse_geometry(raw_geometry, "geometry", where, on_invalid)

    type_value = props.get("objectType", props.get("object_type", props.get("type")))
    if type_value is None:
        object_type = ObjectType.ANNOTATION
    else:
        alias = _TYPE_ALIASES.get(str(type_value).lower()) if isinstance(type_value, str) else None
        if alias is None:
            raise GeoJSONError(f"{where}: unknown object type {type_value!r} (expected one of annotation, detection, "
                               "cell, tile, tmaCore)")
        object_type = alias

    nucleus = None
    if feature.get("nucleusGeometry") is not None:
        if object_type is not ObjectType.CELL:
            raise GeoJSONError(f"{where}: has a nucleusGeometry but is a {object_type.value}, not a cell")
        nucleus = _parse_geometry(feature["nucleusGeometry"], "nucleusGeometry", where, on_invalid)
        if not isinstance(nucleus, (Polygon, MultiPolygon)):
            raise GeoJSONError(f"{where}: nucleusGeometry must be a Polygon or MultiPolygon")

    name = props.get("name")
    if name is not None and not isinstance(name, str):
        raise GeoJSONError(f"{where}: name must be a string, got {name!r}")
    locked = props.get("isLocked", False)
    if not isinstance(locked, bool):
        raise GeoJSONError(f"{where}: isLocked must be true or false, got {locked!r}")
    metadata = props.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise GeoJSONError(f"{where}: metadata must be an object of strings, got {type(metadata).__name__}")

    object_id: uuid.UUID | None = None
    raw_id = feature.get("id")
    if isinstance(raw_id, str):
        try:
            object_id = uuid.UUID(raw_id)
        except ValueError:
            object_id = None  # QuPath 0.2 wrote class names here; QuPath ignores ids it cannot parse

    children_value = props.get("childObjects", props.get("children")) or []
    if not isinstance(children_value, list):
        raise GeoJSONError(f"{where}: childObjects must be a list of features")
    children = []
    for k, child in enumerate(children_value):
        try:
            children.append(from_feature(child, None, on_invalid))
        except GeoJSONError as exc:
            raise GeoJSONError(f"{where}, child {k}: {str(exc).split(': ', 1)[-1]}") from exc

    try:
        kwargs: dict[str, Any] = dict(
            geometry=geometry,
            object_type=object_type,
            path_class=_parse_class(props.get("classification"), where),
            name=name,
            color=_parse_color(props.get("color"), "colour", where),
            locked=locked,
            measurements=_parse_measurements(props.get("measurements"), where),
            plane=_parse_plane(raw_geometry.get("plane"), where),
            children=tuple(children),
            nucleus=nucleus,
            ellipse=bool(raw_geometry.get("isEllipse", False)),
            metadata={str(k): str(v) for k, v in metadata.items()},
        )
        if object_id is not None:
            kwargs["id"] = object_id
        return PathObject(**kwargs)
    except (TypeError, ValueError) as exc:
        raise GeoJSONError(f"{where}: {exc}") from exc


def _features_of(data: Any) -> list[Any]:
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        kind = data.get("type")
        if kind == "FeatureCollection":
            features = data.get("features")
            if not isinstance(features, list):
                raise GeoJSONError("FeatureCollection has no 'features' list")
            return features
        if kind == "Feature":
            return [data]
        if "root" in data and isinstance(data["root"], Mapping):  # GsonTools' hierarchy form
            root = data["root"]
            props = root.get("properties") or {}
            return list(props.get("childObjects", props.get("children")) or [])
        raise GeoJSONError(f"expected a FeatureCollection, a Feature or a list of features, got type {kind!r}")
    raise GeoJSONError(f"expected a FeatureCollection, a Feature or a list of features, got {type(data).__name__}")


def _check_on_invalid(on_invalid: Any) -> None:
    if on_invalid not in ON_INVALID:
        raise GeoJSONError(f"on_invalid must be one of {', '.join(map(repr, ON_INVALID))}, got {on_invalid!r}")


def validate(objects: Sequence[PathObject]) -> list[PathObject]:
    """What every reader of GeoJSON checks beyond each feature: each object id once in the file (QuPath keys
    objects by id). Returns ``objects``."""
    seen: dict[Any, str] = {}
    for index, top in enumerate(objects):
        for obj in walk([top]):
            where = f"feature {index}" + ("" if obj is top else f" (a child, {obj.name or 'unnamed'})")
            if obj.id in seen:
                raise GeoJSONError(f"{where}: object id {obj.id} is already used by {seen[obj.id]}")
            seen[obj.id] = where
    return list(objects)


def from_data(data: Any, on_invalid: OnInvalid = "error") -> list[PathObject]:
    """Objects from already-parsed JSON (a FeatureCollection, a list of features or one feature)."""
    _check_on_invalid(on_invalid)
    return validate([from_feature(f, i, on_invalid) for i, f in enumerate(_features_of(data))])


def loads(text: str | bytes, on_invalid: OnInvalid = "error") -> list[PathObject]:
    """Objects from QuPath GeoJSON text."""
    _check_on_invalid(on_invalid)
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise GeoJSONError(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise GeoJSONError("nested too deeply to be read") from None
    except json.JSONDecodeError as exc:
        raise GeoJSONError(f"not valid JSON: {exc}") from exc
    return from_data(data, on_invalid)


def read(path: str | os.PathLike[str], on_invalid: OnInvalid = "error") -> list[PathObject]:
    """Objects from a QuPath GeoJSON file (``.geojson``/``.json``, optionally gzip-compressed)."""
    path = Path(path)
    _check_on_invalid(on_invalid)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GeoJSONError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        import gzip
        import zlib

        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise GeoJSONError(f"{path}: damaged gzip file ({exc})") from exc
    try:
        return loads(raw, on_invalid)
    except GeoJSONError as exc:
        raise GeoJSONError(f"{path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _geometry_json(geometry: BaseGeometry, precision: int | None) -> dict[str, Any]:
    if precision is not None:
        geometry = shapely.set_precision(geometry, 10.0 ** -precision, mode="pointwise")
    out = dict(mapping(geometry))
    out["coordinates"] = _lists(out["coordinates"])
    return out


def _lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _number_json(value: float) -> float | int | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return _NONFINITE_OUT[value]
    return value


def _class_json(path_class: PathClass) -> dict[str, Any] | str:
    if path_class.color is None:
        return path_class.name  # QuPath rejects {"name"} without a colour; a bare string is accepted
    names = path_class.names
    out: dict[str, Any] = {"names": list(names)} if len(names) > 1 else {"name": path_class.name}
    out["color"] = list(path_class.color)
    return out


def to_feature(obj: PathObject, precision: int | None = None, measurements: bool = True) -> dict[str, Any]:
    """One :class:`PathObject` as a QuPath GeoJSON feature (children under ``childObjects``)."""
    geometry = _geometry_json(obj.geometry, precision)
    if obj.ellipse:
        geometry["isEllipse"] = True
    if not obj.plane.is_default:
        geometry["plane"] = {"c": obj.plane.c, "z": obj.plane.z, "t": obj.plane.t}
    feature: dict[str, Any] = {"type": "Feature", "id": str(obj.id), "geometry": geometry}
    if obj.nucleus is not None:
        feature["nucleusGeometry"] = _geometry_json(obj.nucleus, precision)
    props: dict[str, Any] = {"objectType": obj.object_type.value}
    if obj.name is not None:
        props["name"] = obj.name
    if obj.color is not None:
        props["color"] = list(obj.color)
    if obj.path_class is not None:
        props["classification"] = _class_json(obj.path_class)
    if obj.locked:
        props["isLocked"] = True
    if measurements and obj.measurements:
        props["measurements"] = {k: _number_json(v) for k, v in obj.measurements.items()}
    if obj.metadata:
        props["metadata"] = dict(obj.metadata)
    if obj.children:
        props["childObjects"] = [to_feature(c, precision, measurements) for c in obj.children]
    feature["properties"] = props
    return feature


def to_data(objects: Iterable[PathObject], precision: int | None = None, measurements: bool = True) -> dict[str, Any]:
    """A FeatureCollection (a dict ready for :func:`json.dumps`)."""
    return {"type": "FeatureCollection", "features": [to_feature(o, precision, measurements) for o in objects]}


def dumps(objects: Iterable[PathObject], indent: int | None = None, precision: int | None = None,
          measurements: bool = True) -> str:
    """Objects as QuPath GeoJSON text: a FeatureCollection, as ``exportObjectsToGeoJson(..., "FEATURE_COLLECTION")``."""
    return json.dumps(to_data(objects, precision, measurements), indent=indent, allow_nan=False)


def write(path: str | os.PathLike[str], objects: Sequence[PathObject] | Iterable[PathObject], indent: int | None = None,
          precision: int | None = None, measurements: bool = True) -> Path:
    """Write objects to a GeoJSON file atomically (temporary file, then rename), and check it reads back."""
    path = Path(path)
    objects = list(objects)
    text = dumps(objects, indent=indent, precision=precision, measurements=measurements)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise GeoJSONError(f"{path}: folder {directory} does not exist")

    def reads_back(tmp: Path) -> None:
        back = loads(tmp.read_text(encoding="utf-8"), on_invalid="keep")
        if len(back) != len(objects):
            raise GeoJSONError(f"{path}: wrote {len(objects)} objects but read back {len(back)}")

    atomic_write(path, text, verify=reads_back)
    return path
