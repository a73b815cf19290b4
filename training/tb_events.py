"""TensorBoard scalar event files in plain Python (no TensorFlow, no protobuf package).

An event file is a sequence of TFRecord records, each

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

where ``masked_crc(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)`` and
``crc32c`` is the Castagnoli CRC. ``data`` is a serialized ``tensorflow.Event``
protobuf, encoded here by hand with the few fields scalars need::

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

The first record of a file is an Event carrying only ``wall_time`` and
``file_version = "brain.Event:2"``; TensorBoard reads every file whose name
contains ``tfevents`` in a run directory. :class:`EventWriter` writes them;
:func:`read_scalars` / :func:`read_events` read them back (tests, debugging)
and check both CRCs of every record.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["Event", "EventWriter", "crc32c", "masked_crc32c", "read_events", "read_scalars"]

FILE_VERSION = "brain.Event:2"

# Protobuf wire types.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5

# ---------------------------------------------------------------------------
# CRC-32C (Castagnoli)
# ---------------------------------------------------------------------------


def _make_crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """The CRC-32C (Castagnoli) of ``data``; table driven (scalar logs are small, speed is not a concern)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotated and offset so a CRC stored inside CRC'd data stays well mixed."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Protobuf encoding (only what Event / Summary / Value need)
# ---------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int (negative int64s are passed as their uint64)."""
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field_number: int, wire_type: int) -> bytes:
    return _varint((field_number << 3) | wire_type)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _key(field_number, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
    """Little-endian float32; finite values beyond float32's range become +-inf instead of raising."""
    try:
        return struct.pack("<f", value)
    except OverflowError:  # struct refuses finite doubles that round past float32's max
        return struct.pack("<f", math.copysign(math.inf, value))


def _encode_event(
    wall_time: float,
    step: int | None = None,
    file_version: str | None = None,
    values: Mapping[str, float] | None = None,
) -> bytes:
    out = bytearray(_key(1, _FIXED64) + struct.pack("<d", wall_time))
    if step is not None:
        if not -(2**63) <= step < 2**63:
            raise ValueError(f"step {step} does not fit an int64")
        # int64 varints carry the two's complement as uint64 (negative steps take 10 bytes).
        out += _key(2, _VARINT) + _varint(step & 0xFFFFFFFFFFFFFFFF)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode("utf-8"))
    if values:
        summary = b"".join(
            _length_delimited(1, _length_delimited(1, tag.encode("utf-8")) + _key(2, _FIXED32) + _float32(value))
            for tag, value in values.items()
        )
        out += _length_delimited(5, summary)
    return bytes(out)


def _frame(data: bytes) -> bytes:
    """One TFRecord record around ``data``."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ---------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------

# Distinguishes the files of writers opened by one process within the same second.
_file_counter = itertools.count()


class EventWriter:
    """Appends scalar summaries to a new ``events.out.tfevents.*`` file in ``logdir``.

    Every :meth:`add_scalars` is one record, flushed at once, so a killed
    process leaves every scalar it logged readable (a torn last record is
    the most it can lose). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
        self.path = self.logdir / name
        self._file = open(self.path, "ab")
        self._write(_encode_event(time.time(), file_version=FILE_VERSION))

    def add_scalars(self, step: int, values: Mapping[str, float], wall_time: float | None = None) -> None:
        """Writes ``values`` (tag -> number) at ``step`` as one Event; NaN and inf are kept (TensorBoard shows them).

        Values are stored as float32 (``simple_value``), as TensorBoard does.
        """
        if not values:
            return
        wall_time = time.time() if wall_time is None else float(wall_time)
        self._write(_encode_event(wall_time, int(step), values={str(k): float(v) for k, v in values.items()}))

    def _write(self, data: bytes) -> None:
        if self._file.closed:
            raise ValueError(f"{self.path} is closed")
        self._file.write(_frame(data))
        self._file.flush()

    def close(self) -> None:
        """Closes the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Reader (tests, debugging)
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """The fields of one decoded Event this module knows (others are skipped).

    Attributes:
      wall_time: seconds since the epoch.
      step: the step (0 when absent, as in protobuf).
      file_version: set on a file's first event only.
      values: ``(tag, simple_value)`` pairs of its summary, in file order.
    """

    wall_time: float
    step: int
    file_version: str | None
    values: tuple[tuple[str, float], ...]


def _fields(data: bytes, where: str) -> list[tuple[int, int, int | bytes]]:
    """``(field_number, wire_type, value)`` of a message; varints as int, fixed as raw bytes."""
    fields = []
    pos = 0

    def read_varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError(f"{where}: malformed varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = read_varint()
        field_number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value: int | bytes = read_varint()
        elif wire_type in (_FIXED64, _FIXED32, _LENGTH_DELIMITED):
            size = {_FIXED64: 8, _FIXED32: 4}.get(wire_type) or read_varint()
            if pos + size > len(data):
                raise ValueError(f"{where}: field {field_number} runs past the end of its message")
            value = data[pos:pos + size]
            pos += size
        else:  # 3/4 are the deprecated groups, 6/7 do not exist: nothing an Event of ours holds
            raise ValueError(f"{where}: unsupported wire type {wire_type} (field {field_number})")
        fields.append((field_number, wire_type, value))
    return fields


def _decode_event(data: bytes, where: str) -> Event:
    wall_time, step, file_version, values = 0.0, 0, None, []
    for number, wire_type, value in _fields(data, where):
        if number == 1 and wire_type == _FIXED64:
            wall_time = struct.unpack("<d", value)[0]
        elif number == 2 and wire_type == _VARINT:
            step = value - (1 << 64) if value >= 1 << 63 else value  # uint64 back to int64
        elif number == 3 and wire_type == _LENGTH_DELIMITED:
            file_version = value.decode("utf-8")
        elif number == 5 and wire_type == _LENGTH_DELIMITED:
            for v_number, v_wire, v_value in _fields(value, where):
                if v_number != 1 or v_wire != _LENGTH_DELIMITED:
                    continue
                tag, simple_value = "", None
                for f_number, f_wire, f_value in _fields(v_value, where):
                    if f_number == 1 and f_wire == _LENGTH_DELIMITED:
                        tag = f_value.decode("utf-8")
                    elif f_number == 2 and f_wire == _FIXED32:
                        simple_value = struct.unpack("<f", f_value)[0]
                if simple_value is not None:  # other Value kinds (images, histograms, ...) are not scalars
                    values.append((tag, simple_value))
    return Event(wall_time, step, file_version, tuple(values))


def read_events(path: str | Path) -> list[Event]:
    """Every Event of the event file ``path``, checking the length and data CRC of each record.

    Raises:
      ValueError: a CRC mismatch, a truncated record or an undecodable Event
        (the message names the file and the record's byte offset).
    """
    path = Path(path)
    content = path.read_bytes()
    events = []
    offset = 0
    while offset < len(content):
        where = f"{path} at byte offset {offset}"
        if offset + 12 > len(content):
            raise ValueError(f"{where}: truncated record header")
        length_bytes = content[offset:offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack("<I", content[offset + 8:offset + 12])
        if length_crc != masked_crc32c(length_bytes):
            raise ValueError(f"{where}: length CRC mismatch")
        data_start = offset + 12
        data_end = data_start + length
        if data_end + 4 > len(content):
            raise ValueError(f"{where}: truncated record ({length} data bytes announced)")
        data = content[data_start:data_end]
        (data_crc,) = struct.unpack("<I", content[data_end:data_end + 4])
        if data_crc != masked_crc32c(data):
            raise ValueError(f"{where}: data CRC mismatch")
        events.append(_decode_event(data, where))
        offset = data_end + 4
    return events


def read_scalars(path: str | Path) -> list[tuple[int, str, float]]:
    """``(step, tag, value)`` of every scalar in the event file ``path``, in file order (see :func:`read_events`)."""
    return [(event.step, tag, value) for event in read_events(path) for tag, value in event.values]
