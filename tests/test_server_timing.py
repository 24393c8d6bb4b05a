"""The pieces of the server's hot path that are plain logic: the stage timer and its header, the timing setting,
the JSON body reader and the GeoJSON coordinates of traced masks. The path itself runs in ``test_server.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from shapely.geometry import MultiPolygon, Polygon, mapping

from qpsam.geometry import Region, mask_to_geometry
from qpsam.server import Settings
from qpsam.server.features import _round_coords, geometry_json
from qpsam.server.schemas import SAMBody, parse_body
from qpsam.server.timing import NO_TIMER, StageTimer, parse_server_timing


def test_stage_timer_header_round_trips() -> None:
    timer = StageTimer(_last=0.0)
    timer.stages.update({"read": 0.0004, "parse": 0.0012})
    timer.add("model", 0.02)
    timer.add("model", 0.01)  # a stage named twice adds up
    header = timer.header()["Server-Timing"]
    assert header == "read;dur=0.400, parse;dur=1.200, model;dur=30.000"
    assert parse_server_timing(header) == pytest.approx({"read": 0.0004, "parse": 0.0012, "model": 0.03})


def test_stage_timer_marks_leave_out_what_another_stage_counts() -> None:
    timer = StageTimer()
    timer.mark("first")
    timer.mark("hop", exclude=3600.0)  # more than elapsed: never negative
    assert timer.stages["hop"] == 0.0 and timer.stages["first"] >= 0.0


def test_the_off_timer_records_nothing() -> None:
    NO_TIMER.mark("read")
    NO_TIMER.add("model", 1.0)
    assert NO_TIMER.header() == {} and NO_TIMER.stages == {}


def test_server_timing_parser_skips_entries_without_duration_and_refuses_junk() -> None:
    assert parse_server_timing("") == {}
    assert parse_server_timing('cache;desc="hit", db;dur=53') == {"db": 0.053}
    with pytest.raises(ValueError, match="db"):
        parse_server_timing("db;dur=fast")


def test_timing_setting_from_the_environment() -> None:
    assert Settings.from_env({"QPSAM_SERVER_TIMING": "1"}).timing is True
    assert Settings.from_env({"QPSAM_SERVER_TIMING": "off"}).timing is False
    assert Settings.from_env({}).timing is False
    assert Settings.from_env(Settings(timing=True).to_env()).timing is True  # workers get what the parent had
    with pytest.raises(ValueError, match="QPSAM_SERVER_TIMING"):
        Settings.from_env({"QPSAM_SERVER_TIMING": "maybe"})


def test_body_reader_takes_json_and_names_the_body_in_errors() -> None:
    raw = json.dumps({"type": "vit_t", "bbox": [1, 2, 3, 4], "b64img": "QUJD", "unknown": 1}).encode()
    body = parse_body(SAMBody, raw, "application/json; charset=utf-8")
    assert body.bbox == [1.0, 2.0, 3.0, 4.0] and body.b64img == "QUJD"
    assert parse_body(SAMBody, raw, None) == body  # no content type: JSON, as FastAPI reads it
    assert parse_body(SAMBody, raw, "application/vnd.qupath+json") == body
    cases = {
        b"": "missing",
        b'{"type": "vit_t", "b64img": ': "json_invalid",
        b'{"type": "vit_t", "bbox": [NaN, 1, 2, 3], "b64img": "QUJD"}': "finite_number",
        b'{"type": "vit_t"}': "missing",
    }
    for bad, kind in cases.items():
        with pytest.raises(RequestValidationError) as caught:
            parse_body(SAMBody, bad, "application/json")
        (error,) = caught.value.errors()
        assert error["type"] == kind and error["loc"][0] == "body", (bad, error)
        assert len(str(error.get("input", ""))) < 100  # never the whole body back
    with pytest.raises(RequestValidationError, match="text/plain"):
        parse_body(SAMBody, raw, "text/plain")


def _square(x0: int, y0: int, n: int, size: int = 32) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0 : y0 + n, x0 : x0 + n] = True
    return m


def test_geometry_json_matches_the_generic_rounding() -> None:
    # Traced masks lie on whole pixel corners (the fast path); shifted or scaled ones do not (rounded to 6 places).
    ring = _square(4, 4, 20)
    ring[10:14, 10:14] = False  # a hole
    two = _square(1, 1, 3) | _square(20, 20, 5)
    shapes = [mask_to_geometry(ring), mask_to_geometry(two)]
    shapes += [mask_to_geometry(m, Region(0.1, 7.25, 32 / 3, 32 / 3, 1 / 3)) for m in (ring, two)]
    assert isinstance(shapes[0], Polygon) and len(shapes[0].interiors) == 1 and isinstance(shapes[1], MultiPolygon)
    for shape in shapes:
        assert shape is not None
        expected = {"type": shape.geom_type, "coordinates": _round_coords(mapping(shape)["coordinates"])}
        got = geometry_json(shape)
        assert json.dumps(got) == json.dumps(expected)
    assert geometry_json(shapes[2], {"c": 0, "z": 1, "t": 2})["plane"] == {"c": 0, "z": 1, "t": 2}
