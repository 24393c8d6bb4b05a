"""The Java serialization codec: byte-exact round trips of QuPath's files and the protocol's details."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import SAMPLES

from qpsam.errors import QpsamError
from qpsam.project import javaser as J

QPDATA = sorted(SAMPLES.glob("*/data/*/data.qpdata"))


def test_samples_are_there() -> None:
    assert len(QPDATA) == 135  # 134 files written by QuPath 0.4.0, one by 0.6.0


@pytest.mark.parametrize("path", QPDATA, ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}")
def test_every_qpdata_round_trips_byte_for_byte(path: Path) -> None:
    data = path.read_bytes()
    assert J.dumps(J.loads(data)) == data


def test_references_keep_identity() -> None:
    desc = J.ClassDesc("java.lang.Boolean", -3665804199014368530, J.SC_SERIALIZABLE,
                       [J.FieldDesc("Z", "value")])
    true = J.JavaObject(desc, [J.ClassData(desc, {"value": True})])
    shared = J.JavaString("shared")
    stream = J.JavaStream([true, true, shared, shared, J.JavaString("shared")])
    data = J.dumps(stream)
    assert data.count(b"shared") == 2  # the second occurrence of the same object is a back reference
    assert data.count(bytes([J.TC_REFERENCE])) >= 2
    back = J.loads(data).contents
    assert back[0] is back[1] and back[2] is back[3] and back[4] is not back[2]
    assert back[0].get("value") is True and back[4] == "shared"
    assert J.dumps(J.loads(data)) == data


def test_modified_utf8_matches_java() -> None:
    # Java writes NUL as C0 80 and characters beyond the BMP as two 3-byte surrogates.
    assert J.encode_mutf8("a\x00b") == b"a\xc0\x80b"
    assert J.encode_mutf8("\U0001F600") == b"\xed\xa0\xbd\xed\xb8\x80"
    assert J.encode_mutf8("µm") == "µm".encode("utf-8")
    for text in ("", "plain", "a\x00b", "\U0001F600 ok", "µm", "\ud800 lone surrogate"):
        assert J.decode_mutf8(J.encode_mutf8(text)) == text


def test_long_strings_use_tc_longstring() -> None:
    text = J.JavaString("x" * 70000)
    data = J.dumps(J.JavaStream([text]))
    assert data[4] == J.TC_LONGSTRING
    assert J.loads(data).contents[0] == text


def test_block_data_is_cut_like_java() -> None:
    out = J.DataWriter()
    out.write_bytes(b"\x01" * 1500)
    out.write_object(None)
    out.write_int(7)
    items = out.finish()
    assert [len(i.data) if isinstance(i, J.BlockData) else i for i in items] == [1024, 476, None, 4]
    data = J.dumps(J.JavaStream(items))
    # 1024 bytes need TC_BLOCKDATALONG, 476 too, 4 bytes a short block
    assert data[4] == J.TC_BLOCKDATALONG and struct.unpack(">i", data[5:9])[0] == 1024
    reader = J.DataReader(J.loads(data).contents)
    assert reader.read(">1500s") == b"\x01" * 1500  # primitives read across block boundaries
    assert reader.read_object() is None and reader.read_int() == 7 and reader.at_end()


def test_truncated_stream_is_an_error() -> None:
    data = QPDATA[0].read_bytes()
    for cut in (3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(J.JavaSerError, match="unexpected end of stream|too short"):
            J.loads(data[:cut])


def test_not_a_stream() -> None:
    with pytest.raises(J.JavaSerError, match="magic"):
        J.loads(b"PK\x03\x04 not java")
    with pytest.raises(J.JavaSerError, match="unknown type code"):
        J.loads(b"\xac\xed\x00\x05\x01")
    with pytest.raises(J.JavaSerError, match="unknown handle"):
        J.loads(b"\xac\xed\x00\x05\x71\x00\x7e\x00\x05")


def test_codec_errors_are_qpsam_errors() -> None:
    # Callers catch QpsamError for every error qpsam raises on purpose; ValueError stays for older callers.
    with pytest.raises(QpsamError):
        J.loads(b"PK\x03\x04 not java")
    assert issubclass(J.JavaSerError, ValueError)
