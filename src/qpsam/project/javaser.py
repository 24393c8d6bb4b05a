"""A reader and writer of the Java Object Serialization Stream Protocol (version 5).

QuPath's ``data.qpdata`` is an ``ObjectOutputStream``. This module models the stream generically
(class descriptors, field values, ``writeObject``/``writeExternal`` annotations, block data,
handles) so that a stream read and written back gives the same bytes.

Handles are not stored: the writer assigns them in the order objects appear, and a value that
appears again (the same Python object, by identity) is written as a back reference, exactly as
Java's ``ObjectOutputStream`` does with the same Java object. The reader returns the same Python
object for every reference to a handle, so identity carries the stream's sharing.

Strings are :class:`JavaString` (so that two equal strings that were two objects in the stream
stay two objects); writing also accepts plain ``str``, each written as a new string object.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Union

import numpy as np

from ..errors import QpsamError

__all__ = [
    "JavaSerError",
    "JavaString",
    "FieldDesc",
    "ClassDesc",
    "ClassData",
    "JavaObject",
    "JavaArray",
    "JavaEnum",
    "JavaClass",
    "BlockData",
    "Reset",
    "JavaStream",
    "DataReader",
    "DataWriter",
    "loads",
    "dumps",
    "SC_WRITE_METHOD",
    "SC_SERIALIZABLE",
    "SC_EXTERNALIZABLE",
    "SC_BLOCK_DATA",
    "SC_ENUM",
]

STREAM_MAGIC = 0xACED
STREAM_VERSION = 5

TC_NULL = 0x70
TC_REFERENCE = 0x71
TC_CLASSDESC = 0x72
TC_OBJECT = 0x73
TC_STRING = 0x74
TC_ARRAY = 0x75
TC_CLASS = 0x76
TC_BLOCKDATA = 0x77
TC_ENDBLOCKDATA = 0x78
TC_RESET = 0x79
TC_BLOCKDATALONG = 0x7A
TC_EXCEPTION = 0x7B
TC_LONGSTRING = 0x7C
TC_PROXYCLASSDESC = 0x7D
TC_ENUM = 0x7E
BASE_WIRE_HANDLE = 0x7E0000

SC_WRITE_METHOD = 0x01
SC_SERIALIZABLE = 0x02
SC_EXTERNALIZABLE = 0x04
SC_BLOCK_DATA = 0x08
SC_ENUM = 0x10

# Java's ObjectOutputStream buffers block data in chunks of at most this many bytes.
MAX_BLOCK_SIZE = 1024

_PRIM_FORMATS = {"B": ">b", "C": ">H", "D": ">d", "F": ">f", "I": ">i", "J": ">q", "S": ">h", "Z": ">?"}
_PRIM_SIZES = {k: struct.calcsize(v) for k, v in _PRIM_FORMATS.items()}
_ARRAY_DTYPES = {"B": ">i1", "C": ">u2", "D": ">f8", "F": ">f4", "I": ">i4", "J": ">i8", "S": ">i2", "Z": "?"}


class JavaSerError(QpsamError, ValueError):
    """A byte stream that is not a valid (or not a supported) Java serialization stream."""


# --------------------------------------------------------------------------------------------
# Modified UTF-8 (DataOutput.writeUTF): NUL as C0 80, characters above the BMP as surrogate pairs.


def encode_mutf8(text: str) -> bytes:
    """Encode ``text`` as Java's modified UTF-8."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: encode each code unit by hand below
        raw = b""
    else:
        if "\x00" not in text and all(b < 0xF0 for b in raw):
            return raw
    out = bytearray()
    units = text.encode("utf-16-be", "surrogatepass")
    for i in range(0, len(units), 2):
        c = (units[i] << 8) | units[i + 1]
        if 0x0001 <= c <= 0x007F:
            out.append(c)
        elif c <= 0x07FF:
            out += bytes((0xC0 | (c >> 6), 0x80 | (c & 0x3F)))
        else:
            out += bytes((0xE0 | (c >> 12), 0x80 | ((c >> 6) & 0x3F), 0x80 | (c & 0x3F)))
    return bytes(out)


def decode_mutf8(raw: bytes) -> str:
    """Decode Java's modified UTF-8."""
    if b"\xc0\x80" not in raw and b"\xed" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    units = []
    i, n = 0, len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            units.append(b)
            i += 1
        elif b >> 5 == 0b110 and i + 1 < n:
            units.append(((b & 0x1F) << 6) | (raw[i + 1] & 0x3F))
            i += 2
        elif b >> 4 == 0b1110 and i + 2 < n:
            units.append(((b & 0x0F) << 12) | ((raw[i + 1] & 0x3F) << 6) | (raw[i + 2] & 0x3F))
            i += 3
        else:
            raise JavaSerError(f"malformed modified UTF-8 byte 0x{b:02x} at offset {i} of a string")
    data = b"".join(u.to_bytes(2, "big") for u in units)
    return data.decode("utf-16-be", "surrogatepass")


# --------------------------------------------------------------------------------------------
# The model


class JavaString(str):
    """A Java ``String`` object: a ``str`` with its own identity in the stream."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"JavaString({str.__repr__(self)})"

    # Identity, not value, decides sharing in the stream; keep str equality for convenience.
    __hash__ = str.__hash__


@dataclass(eq=False)
class FieldDesc:
    """One field of a class descriptor: type code, name and (object fields) its type string."""

    typecode: str
    name: str
    class_name: "JavaString | str | None" = None

    @property
    def is_primitive(self) -> bool:
        return self.typecode not in ("L", "[")


@dataclass(eq=False)
class ClassDesc:
    """A class descriptor (``TC_CLASSDESC``) or a proxy class descriptor (``interfaces`` set)."""

    name: str
    suid: int
    flags: int
    fields: list[FieldDesc] = field(default_factory=list)
    annotation: list[Any] = field(default_factory=list)
    superclass: "ClassDesc | None" = None
    interfaces: list[str] | None = None

    @property
    def is_externalizable(self) -> bool:
        return bool(self.flags & SC_EXTERNALIZABLE)

    def hierarchy(self) -> list["ClassDesc"]:
        """This descriptor and its super descriptors, the topmost superclass first."""
        chain: list[ClassDesc] = []
        desc: ClassDesc | None = self
        while desc is not None:
            chain.append(desc)
            desc = desc.superclass
        chain.reverse()
        return chain

    def __repr__(self) -> str:
        return f"ClassDesc({self.name!r})"


@dataclass(eq=False)
class ClassData:
    """The data one class level of a serializable object wrote: its fields and, for classes with
    a ``writeObject`` method, what that method wrote after the fields (``annotation``)."""

    desc: ClassDesc
    values: dict[str, Any]
    annotation: list[Any] | None = None


@dataclass(eq=False)
class JavaObject:
    """An object (``TC_OBJECT``): per-class data for serializable objects, or the single
    ``external`` content list for externalizable ones."""

    classdesc: ClassDesc
    class_data: list[ClassData] = field(default_factory=list)
    external: list[Any] | None = None

    @property
    def class_name(self) -> str:
        return self.classdesc.name

    def get(self, name: str, default: Any = None) -> Any:
        """A field value, searching the most derived class first."""
        for data in reversed(self.class_data):
            if name in data.values:
                return data.values[name]
        return default

    def set(self, name: str, value: Any) -> None:
        for data in reversed(self.class_data):
            if name in data.values:
                data.values[name] = value
                return
        raise KeyError(f"{self.classdesc.name} has no serialized field {name!r}")

    def data_of(self, class_name: str) -> ClassData:
        for data in self.class_data:
            if data.desc.name == class_name:
                return data
        raise KeyError(f"{self.classdesc.name} has no class level {class_name!r}")

    def __repr__(self) -> str:
        return f"JavaObject({self.classdesc.name!r})"


@dataclass(eq=False)
class JavaArray:
    """An array (``TC_ARRAY``). Primitive arrays hold a big-endian numpy array (``[B``: bytes)."""

    classdesc: ClassDesc
    values: Any

    def __len__(self) -> int:
        return len(self.values)

    def __repr__(self) -> str:
        return f"JavaArray({self.classdesc.name!r}, n={len(self.values)})"


@dataclass(eq=False)
class JavaEnum:
    """An enum constant (``TC_ENUM``)."""

    classdesc: ClassDesc
    constant: "JavaString | str"

    def __repr__(self) -> str:
        return f"JavaEnum({self.classdesc.name!r}, {str(self.constant)!r})"


@dataclass(eq=False)
class JavaClass:
    """A ``Class`` object (``TC_CLASS``)."""

    classdesc: ClassDesc


@dataclass(eq=False)
class BlockData:
    """A block of primitive data as written (``TC_BLOCKDATA`` / ``TC_BLOCKDATALONG``)."""

    data: bytes
    long: bool = False

    def __repr__(self) -> str:
        return f"BlockData({len(self.data)} bytes)"


@dataclass(eq=False)
class Reset:
    """``TC_RESET``: the writer cleared its handle table here."""


@dataclass(eq=False)
class JavaStream:
    """A whole stream: the top-level contents (objects and block data, in order)."""

    contents: list[Any]
    version: int = STREAM_VERSION


# --------------------------------------------------------------------------------------------
# Reading


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.buf = memoryview(data)
        self.pos = 0
        self.handles: list[Any] = []

    # primitive reads --------------------------------------------------------------
    def _need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise JavaSerError(
                f"unexpected end of stream at byte {len(self.buf)} while reading {what} "
                f"(needed {n} bytes at offset {self.pos})"
            )

    def u1(self, what: str = "a byte") -> int:
        self._need(1, what)
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def unpack(self, fmt: str, size: int, what: str) -> Any:
        self._need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def raw(self, n: int, what: str) -> bytes:
        self._need(n, what)
        value = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return value

    def utf(self, what: str) -> str:
        n = self.unpack(">H", 2, what)
        return decode_mutf8(self.raw(n, what))

    def new_handle(self, obj: Any) -> int:
        self.handles.append(obj)
        return len(self.handles) - 1

    # grammar -------------------------------------------------------------------------
    def content(self, tc: int | None = None) -> Any:
        """One item: an object or a block of data (``tc`` already read when given)."""
        if tc is None:
            tc = self.u1("a type code")
        if tc == TC_BLOCKDATA:
            n = self.u1("a block length")
            return BlockData(self.raw(n, "block data"), False)
        if tc == TC_BLOCKDATALONG:
            n = self.unpack(">i", 4, "a block length")
            if n < 0:
                raise JavaSerError(f"negative block length {n} at offset {self.pos - 4}")
            return BlockData(self.raw(n, "block data"), True)
        if tc == TC_RESET:
            self.handles.clear()
            return Reset()
        return self.object(tc)

    def object(self, tc: int | None = None) -> Any:
        start = self.pos
        if tc is None:
            tc = self.u1("a type code")
        if tc == TC_NULL:
            return None
        if tc == TC_REFERENCE:
            handle = self.unpack(">i", 4, "a handle") - BASE_WIRE_HANDLE
            if not 0 <= handle < len(self.handles):
                raise JavaSerError(f"reference to unknown handle 0x{handle + BASE_WIRE_HANDLE:x} at offset {start}")
            return self.handles[handle]
        if tc == TC_STRING:
            n = self.unpack(">H", 2, "a string length")
            value = JavaString(decode_mutf8(self.raw(n, "a string")))
            self.new_handle(value)
            return value
        if tc == TC_LONGSTRING:
            n = self.unpack(">q", 8, "a long string length")
            value = JavaString(decode_mutf8(self.raw(n, "a long string")))
            self.new_handle(value)
            return value
        if tc in (TC_CLASSDESC, TC_PROXYCLASSDESC):
            return self.classdesc(tc)
        if tc == TC_OBJECT:
            return self.new_object()
        if tc == TC_ARRAY:
            return self.new_array()
        if tc == TC_ENUM:
            enum = JavaEnum(self.classdesc_required("an enum class descriptor"), JavaString(""))
            self.new_handle(enum)
            name = self.object()
            if not isinstance(name, str):
                raise JavaSerError(f"enum constant name is not a string at offset {start}")
            enum.constant = name
            return enum
        if tc == TC_CLASS:
            cls = JavaClass(self.classdesc_required("a class descriptor"))
            self.new_handle(cls)
            return cls
        if tc == TC_EXCEPTION:
            raise JavaSerError(f"the stream holds an exception written during serialization (offset {start})")
        if tc == TC_ENDBLOCKDATA:
            raise JavaSerError(f"unexpected end-of-block marker at offset {start}")
        raise JavaSerError(f"unknown type code 0x{tc:02x} at offset {start}")

    def classdesc_or_null(self, what: str) -> ClassDesc | None:
        start = self.pos
        value = self.object()
        if value is not None and not isinstance(value, ClassDesc):
            raise JavaSerError(f"expected {what} at offset {start}, got {type(value).__name__}")
        return value

    def classdesc_required(self, what: str) -> ClassDesc:
        # Java itself fails on a null descriptor here (ObjectInputStream dereferences it)
        start = self.pos
        desc = self.classdesc_or_null(what)
        if desc is None:
            raise JavaSerError(f"expected {what} at offset {start}, got null")
        return desc

    def classdesc(self, tc: int) -> ClassDesc:
        if tc == TC_PROXYCLASSDESC:
            desc = ClassDesc("<proxy>", 0, 0, interfaces=[])
            self.new_handle(desc)
            count = self.unpack(">i", 4, "an interface count")
            desc.interfaces = [self.utf("an interface name") for _ in range(count)]
        else:
            name = self.utf("a class name")
            suid = self.unpack(">q", 8, "a serialVersionUID")
            desc = ClassDesc(name, suid, 0)
            self.new_handle(desc)
            desc.flags = self.u1("class flags")
            count = self.unpack(">h", 2, "a field count")
            for _ in range(count):
                code = chr(self.u1("a field type code"))
                fname = self.utf("a field name")
                cname = None
                if code in ("L", "["):
                    cname = self.object()
                    if not isinstance(cname, str):
                        raise JavaSerError(f"field {fname!r} of {name} has no type string (offset {self.pos})")
                elif code not in _PRIM_FORMATS:
                    raise JavaSerError(f"unknown field type code {code!r} for {name}.{fname} (offset {self.pos})")
                desc.fields.append(FieldDesc(code, fname, cname))
        desc.annotation = self.annotation()
        desc.superclass = self.classdesc_or_null("a superclass descriptor")
        return desc

    def annotation(self) -> list[Any]:
        """Contents up to (and consuming) ``TC_ENDBLOCKDATA``."""
        items: list[Any] = []
        while True:
            tc = self.u1("a type code (annotation without end marker)")
            if tc == TC_ENDBLOCKDATA:
                return items
            items.append(self.content(tc))

    def new_object(self) -> JavaObject:
        desc = self.classdesc_or_null("a class descriptor")
        if desc is None:
            raise JavaSerError(f"object without class descriptor at offset {self.pos}")
        obj = JavaObject(desc)
        self.new_handle(obj)
        if desc.is_externalizable:
            if not desc.flags & SC_BLOCK_DATA:
                raise JavaSerError(
                    f"{desc.name} was written with stream protocol 1 (externalizable data without "
                    "block-data mode), which cannot be read without the class"
                )
            obj.external = self.annotation()
            return obj
        for level in desc.hierarchy():
            values = {f.name: self.value(f) for f in level.fields}
            annotation = self.annotation() if level.flags & SC_WRITE_METHOD else None
            obj.class_data.append(ClassData(level, values, annotation))
        return obj

    def value(self, f: FieldDesc) -> Any:
        if f.is_primitive:
            value = self.unpack(_PRIM_FORMATS[f.typecode], _PRIM_SIZES[f.typecode], f"field {f.name}")
            return chr(value) if f.typecode == "C" else value
        return self.object()

    def new_array(self) -> JavaArray:
        desc = self.classdesc_or_null("an array class descriptor")
        if desc is None or not desc.name.startswith("["):
            raise JavaSerError(f"array without array class descriptor at offset {self.pos}")
        array = JavaArray(desc, None)
        self.new_handle(array)
        n = self.unpack(">i", 4, "an array length")
        if n < 0:
            raise JavaSerError(f"negative array length {n} at offset {self.pos - 4}")
        code = desc.name[1]
        if code == "B":
            array.values = self.raw(n, "a byte array")
        elif code in _ARRAY_DTYPES:
            dtype = np.dtype(_ARRAY_DTYPES[code])
            array.values = np.frombuffer(self.raw(n * dtype.itemsize, f"a {desc.name} array"), dtype=dtype)
        else:
            # Each element takes at least one byte: a count beyond what is left is damage, not a long array.
            if n > len(self.buf) - self.pos:
                raise JavaSerError(f"array of {n} elements at offset {self.pos - 4} is longer than the "
                                   f"{len(self.buf) - self.pos} bytes left in the stream")
            array.values = [self.object() for _ in range(n)]
        return array


def loads(data: bytes) -> JavaStream:
    """Parse a whole serialization stream."""
    reader = _Reader(data)
    if len(data) < 4:
        raise JavaSerError(f"stream of {len(data)} bytes is too short for a serialization header")
    magic, version = struct.unpack_from(">HH", data, 0)
    if magic != STREAM_MAGIC:
        raise JavaSerError(f"not a Java serialization stream (magic 0x{magic:04x}, expected 0xaced)")
    reader.pos = 4
    contents = []
    while reader.pos < len(data):
        contents.append(reader.content())
    return JavaStream(contents, version)


# --------------------------------------------------------------------------------------------
# Writing


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()
        self.handles: dict[int, int] = {}
        self.keep: list[Any] = []  # keep written objects alive so that ids stay unique

    def new_handle(self, obj: Any) -> None:
        self.handles[id(obj)] = len(self.keep)
        self.keep.append(obj)

    def reference(self, obj: Any) -> bool:
        handle = self.handles.get(id(obj))
        if handle is None:
            return False
        self.out.append(TC_REFERENCE)
        self.out += struct.pack(">i", handle + BASE_WIRE_HANDLE)
        return True

    def utf(self, text: str) -> None:
        raw = encode_mutf8(text)
        if len(raw) > 0xFFFF:
            raise JavaSerError(f"string of {len(raw)} bytes is too long for writeUTF")
        self.out += struct.pack(">H", len(raw))
        self.out += raw

    def content(self, item: Any) -> None:
        if isinstance(item, BlockData):
            n = len(item.data)
            if item.long or n > 0xFF:
                self.out.append(TC_BLOCKDATALONG)
                self.out += struct.pack(">i", n)
            else:
                self.out.append(TC_BLOCKDATA)
                self.out.append(n)
            self.out += item.data
        elif isinstance(item, Reset):
            self.out.append(TC_RESET)
            self.handles.clear()
            self.keep.clear()
        else:
            self.object(item)

    def object(self, obj: Any) -> None:
        if obj is None:
            self.out.append(TC_NULL)
            return
        if isinstance(obj, str):
            if isinstance(obj, JavaString) and self.reference(obj):
                return
            raw = encode_mutf8(obj)
            if len(raw) <= 0xFFFF:
                self.out.append(TC_STRING)
                self.out += struct.pack(">H", len(raw))
            else:
                self.out.append(TC_LONGSTRING)
                self.out += struct.pack(">q", len(raw))
            self.new_handle(obj)
            self.out += raw
            return
        if self.reference(obj):
            return
        if isinstance(obj, ClassDesc):
            self.classdesc(obj)
        elif isinstance(obj, JavaObject):
            self.java_object(obj)
        elif isinstance(obj, JavaArray):
            self.array(obj)
        elif isinstance(obj, JavaEnum):
            self.out.append(TC_ENUM)
            self.object(obj.classdesc)
            self.new_handle(obj)
            self.object(obj.constant)
        elif isinstance(obj, JavaClass):
            self.out.append(TC_CLASS)
            self.object(obj.classdesc)
            self.new_handle(obj)
        else:
            raise JavaSerError(f"cannot serialize a Python {type(obj).__name__} as a Java object")

    def classdesc(self, desc: ClassDesc) -> None:
        if desc.interfaces is not None:
            self.out.append(TC_PROXYCLASSDESC)
            self.new_handle(desc)
            self.out += struct.pack(">i", len(desc.interfaces))
            for name in desc.interfaces:
                self.utf(name)
        else:
            self.out.append(TC_CLASSDESC)
            self.utf(desc.name)
            self.out += struct.pack(">q", desc.suid)
            self.new_handle(desc)
            self.out.append(desc.flags)
            self.out += struct.pack(">h", len(desc.fields))
            for f in desc.fields:
                self.out.append(ord(f.typecode))
                self.utf(f.name)
                if not f.is_primitive:
                    self.object(f.class_name)
        self.annotation(desc.annotation)
        self.object(desc.superclass)

    def annotation(self, items: Iterable[Any]) -> None:
        for item in items:
            self.content(item)
        self.out.append(TC_ENDBLOCKDATA)

    def java_object(self, obj: JavaObject) -> None:
        self.out.append(TC_OBJECT)
        self.object(obj.classdesc)
        self.new_handle(obj)
        if obj.classdesc.is_externalizable:
            self.annotation(obj.external or [])
            return
        for data in obj.class_data:
            for f in data.desc.fields:
                try:
                    value = data.values[f.name]
                except KeyError:
                    raise JavaSerError(f"{obj.classdesc.name} has no value for field {f.name!r}") from None
                if f.is_primitive:
                    if f.typecode == "C":
                        value = ord(value) if isinstance(value, str) else value
                    self.out += struct.pack(_PRIM_FORMATS[f.typecode], value)
                else:
                    self.object(value)
            if data.desc.flags & SC_WRITE_METHOD:
                self.annotation(data.annotation or [])

    def array(self, array: JavaArray) -> None:
        self.out.append(TC_ARRAY)
        self.object(array.classdesc)
        self.new_handle(array)
        code = array.classdesc.name[1]
        values = array.values
        self.out += struct.pack(">i", len(values))
        if code == "B":
            self.out += bytes(values)
        elif code in _ARRAY_DTYPES:
            self.out += np.asarray(values, dtype=_ARRAY_DTYPES[code]).tobytes()
        else:
            for value in values:
                self.object(value)


def dumps(stream: JavaStream) -> bytes:
    """Serialize a :class:`JavaStream` (the inverse of :func:`loads`)."""
    writer = _Writer()
    writer.out += struct.pack(">HH", STREAM_MAGIC, stream.version)
    for item in stream.contents:
        writer.content(item)
    return bytes(writer.out)


# --------------------------------------------------------------------------------------------
# Primitive/object streams over content lists (what writeExternal/readExternal see)


class DataReader:
    """Reads a content list as ``ObjectInput`` does: primitives across block boundaries, objects."""

    def __init__(self, items: Iterable[Any], where: str = "stream") -> None:
        self._items: Iterator[Any] = iter(items)
        self._buf = b""
        self._pos = 0
        self._pending: list[Any] = []
        self.where = where

    def _next_item(self) -> Any:
        if self._pending:
            return self._pending.pop()
        try:
            return next(self._items)
        except StopIteration:
            raise JavaSerError(f"unexpected end of data in {self.where}") from None

    def _fill(self, n: int) -> None:
        while len(self._buf) - self._pos < n:
            item = self._next_item()
            if not isinstance(item, BlockData):
                raise JavaSerError(f"expected primitive data in {self.where}, found {item!r}")
            self._buf = self._buf[self._pos :] + item.data
            self._pos = 0

    def read(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self._fill(size)
        value = struct.unpack_from(fmt, self._buf, self._pos)[0]
        self._pos += size
        return value

    def read_int(self) -> int:
        return self.read(">i")

    def read_long(self) -> int:
        return self.read(">q")

    def read_double(self) -> float:
        return self.read(">d")

    def read_float(self) -> float:
        return self.read(">f")

    def read_boolean(self) -> bool:
        return self.read(">?")

    def read_utf(self) -> str:
        n = self.read(">H")
        self._fill(n)
        raw = self._buf[self._pos : self._pos + n]
        self._pos += n
        return decode_mutf8(raw)

    def read_object(self) -> Any:
        if self._pos < len(self._buf):
            raise JavaSerError(f"expected an object in {self.where}, found {len(self._buf) - self._pos} bytes of data")
        item = self._next_item()
        if isinstance(item, BlockData):
            if item.data:
                raise JavaSerError(f"expected an object in {self.where}, found {len(item.data)} bytes of data")
            return self.read_object()
        return item

    def at_end(self) -> bool:
        if self._pos < len(self._buf):
            return False
        try:
            item = next(self._items)
        except StopIteration:
            return True
        self._pending.append(item)
        return False


class DataWriter:
    """Builds a content list as ``ObjectOutput`` does in block-data mode.

    Primitive writes are buffered and cut into blocks of at most 1024 bytes; writing an object
    flushes the buffer first, as Java's ``ObjectOutputStream`` does.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._buf = bytearray()

    def _flush(self) -> None:
        if self._buf:
            self.items.append(BlockData(bytes(self._buf)))
            self._buf = bytearray()

    def write(self, fmt: str, value: Any) -> None:
        self.write_bytes(struct.pack(fmt, value))

    def write_bytes(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if len(self._buf) >= MAX_BLOCK_SIZE:
                self._flush()
            take = MAX_BLOCK_SIZE - len(self._buf)
            self._buf += view[:take]
            view = view[take:]

    def write_int(self, value: int) -> None:
        self.write(">i", value)

    def write_long(self, value: int) -> None:
        self.write(">q", value)

    def write_double(self, value: float) -> None:
        self.write(">d", value)

    def write_float(self, value: float) -> None:
        self.write(">f", value)

    def write_boolean(self, value: bool) -> None:
        self.write(">?", bool(value))

    def write_utf(self, text: str) -> None:
        raw = encode_mutf8(text)
        if len(raw) > 0xFFFF:
            raise JavaSerError(f"string of {len(raw)} bytes is too long for writeUTF")
        self.write_bytes(struct.pack(">H", len(raw)) + raw)

    def write_object(self, obj: Any) -> None:
        self._flush()
        self.items.append(obj)

    def finish(self) -> list[Any]:
        """The content list (flushes pending data)."""
        self._flush()
        return self.items


Value = Union[None, str, JavaObject, JavaArray, JavaEnum, JavaClass, ClassDesc]
