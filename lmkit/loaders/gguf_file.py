"""The one checked way lmkit opens a GGUF file: every length, count and tensor is validated before it is used.

A GGUF file (llama.cpp's format) is a header — magic ``GGUF``, version, tensor count, metadata count — then the
metadata key/value pairs, the tensor descriptions (name, shape, ggml type, offset), padding to the alignment, and
the tensor data. ``gguf.GGUFReader`` (the reference reader, from llama.cpp's repository) trusts all of it: a file cut
short or a corrupted length surfaces as a numpy reshape error deep inside it, a huge count as a loop that never
ends. :func:`open_gguf` first walks the header itself, checking every length and count against the bytes that are
really there, then each tensor's type, shape and data range, and only then hands the file to ``GGUFReader``. Errors
are :class:`GGUFError` (a ``ValueError``) naming the file and what is wrong with it::

    >>> reader = open_gguf(lmkit.assets.smollm2_gguf())       # a gguf.GGUFReader
    >>> metadata(reader, "llama.block_count")
    30
    >>> weights = dequantized(reader, "blk.0.attn_q.weight")   # float32, checked finite

What it cannot see: a flipped bit that leaves a value finite and in range (an fp16 block scale turned from 0.01
into 0.02, say) is a valid file with different numbers; no format check can find it, only a comparison with a
known-good copy (a checksum) or with a reference model's outputs.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
# GGUFValueType -> struct format of a scalar; 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """A GGUF file that is not what it claims to be; the message names the file and the problem."""


class _Header:
    """A bounds-checked little-endian reader over the file's bytes."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path):
        self.buf, self.path, self.pos = buf, path, 0

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"GGUF file {self.path}: {problem}")

    def take(self, n: int, what: str) -> int:
        """Advance over ``n`` bytes of ``what``; the file must still hold them."""
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"truncated or corrupted: {what} needs {n} bytes at offset {self.pos}, but the file "
                            f"has {len(self.buf) - self.pos} left (of {len(self.buf)})")
        start, self.pos = self.pos, self.pos + n
        return start

    def scalar(self, fmt: str, what: str) -> Any:
        start = self.take(struct.calcsize("<" + fmt), what)
        return struct.unpack_from("<" + fmt, self.buf, start)[0]

    def string(self, what: str) -> str:
        n = self.scalar("Q", f"the length of {what}")
        start = self.take(n, f"{what} (a string of length {n})")
        try:
            return bytes(self.buf[start:start + n]).decode("utf-8")
        except UnicodeDecodeError as err:
            raise self.fail(f"{what} is not valid UTF-8 ({err})") from None

    def value(self, vtype: int, what: str) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY:
            item = self.scalar("I", f"the item type of {what}")
            count = self.scalar("Q", f"the item count of {what}")
            if item in _SCALARS:  # fixed-size items: one bounds check for all of them
                size = struct.calcsize("<" + _SCALARS[item])
                if count * size > len(self.buf) - self.pos:
                    raise self.fail(f"corrupted count: {what} claims {count} items of {size} bytes, more than the "
                                    f"{len(self.buf) - self.pos} bytes left in the file")
                self.take(count * size, what)
                return count
            if item == _STRING:
                if count * 8 > len(self.buf) - self.pos:  # every string needs at least its 8-byte length
                    raise self.fail(f"corrupted count: {what} claims {count} strings, more than the file can hold")
                for i in range(count):
                    self.string(f"item {i} of {what}")
                return count
            raise self.fail(f"{what} is an array of unknown value type {item} (nested arrays are not used by GGUF)")
        raise self.fail(f"{what} has unknown value type {vtype}")


def check_gguf(path: str | os.PathLike) -> None:
    """Validate the file's structure (see the module docstring); raise :class:`GGUFError` naming the problem.

    In the file's order: the header (:func:`_read_counts`), the metadata (:func:`_read_metadata`), the tensor
    descriptions (:func:`_read_tensor_infos`), then where each tensor's data lies (:func:`_check_tensor_data`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no GGUF file at {path}")
    if path.is_dir():
        raise GGUFError(f"{path} is a folder, not a GGUF file")
    size = path.stat().st_size
    if size < 24:
        raise GGUFError(f"GGUF file {path}: truncated: {size} bytes, less than the 24-byte header")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        h = _Header(buf, path)
        n_tensors, n_kv = _read_counts(h)
        keys = _read_metadata(h, n_kv)
        infos = _read_tensor_infos(h, n_tensors)
        _check_tensor_data(h, infos, _alignment(h, keys))


def _read_counts(h: _Header) -> tuple[int, int]:
    """The header: magic, version, then the tensor and metadata counts (checked against the file's size)."""
    if bytes(h.buf[:4]) != GGUF_MAGIC:
        raise h.fail(f"not a GGUF file: it starts with {bytes(h.buf[:4])!r}, not {GGUF_MAGIC!r}")
    h.take(4, "the magic")
    version = h.scalar("I", "the version")
    if version not in SUPPORTED_VERSIONS:
        raise h.fail(f"version {version} is not supported (only {SUPPORTED_VERSIONS}; a big-endian file?)")
    n_tensors, n_kv = h.scalar("Q", "the tensor count"), h.scalar("Q", "the metadata count")
    # the smallest metadata entry is 13 bytes (key length, type, one-byte value), a tensor info 32
    if n_kv * 13 + n_tensors * 32 > len(h.buf):
        raise h.fail(f"corrupted counts: {n_tensors} tensors and {n_kv} metadata entries cannot fit in "
                     f"{len(h.buf)} bytes")
    return n_tensors, n_kv


def _read_metadata(h: _Header, n_kv: int) -> dict[str, tuple[int, Any]]:
    """``key -> (value type, value)`` for the ``n_kv`` metadata entries (an array's value: its item count)."""
    keys: dict[str, tuple[int, Any]] = {}
    for i in range(n_kv):
        key = h.string(f"metadata key {i}")
        if key in keys:
            raise h.fail(f"metadata key {key!r} appears twice")
        vtype = h.scalar("I", f"the value type of {key!r}")
        keys[key] = (vtype, h.value(vtype, f"metadata {key!r}"))
    return keys


def _read_tensor_infos(h: _Header, n_tensors: int) -> list[tuple[str, list[int], int, int]]:
    """``(name, dims, ggml type, data offset)`` of each tensor description."""
    infos = []
    for i in range(n_tensors):
        name = h.string(f"the name of tensor {i}")
        n_dims = h.scalar("I", f"the dimension count of tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise h.fail(f"tensor {name!r} claims {n_dims} dimensions (GGUF allows 1 to {MAX_DIMS})")
        dims = [h.scalar("Q", f"dimension {d} of tensor {name!r}") for d in range(n_dims)]
        ggml_type = h.scalar("I", f"the type of tensor {name!r}")
        offset = h.scalar("Q", f"the data offset of tensor {name!r}")
        infos.append((name, dims, ggml_type, offset))
    return infos


def _alignment(h: _Header, keys: dict[str, tuple[int, Any]]) -> int:
    """The data alignment: ``general.alignment`` (a power-of-two uint32) or GGUF's default 32."""
    if "general.alignment" not in keys:
        return 32
    vtype, alignment = keys["general.alignment"]
    if vtype != 4 or alignment == 0 or alignment & (alignment - 1):
        raise h.fail(f"general.alignment must be a power-of-two uint32, got {alignment!r}")
    return alignment


def _tensor_bytes(h: _Header, name: str, dims: list[int], ggml_type: int) -> tuple[str, int]:
    """The type's name and the byte size of tensor ``name``: a known ggml type, no zero dimension, whole blocks."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    where = f"tensor {name!r}"
    try:
        qtype = GGMLQuantizationType(ggml_type)
    except ValueError:
        raise h.fail(f"{where} has unknown ggml type {ggml_type}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise h.fail(f"{where} has ggml type {qtype.name}, which has no known block layout")
    block, type_size = GGML_QUANT_SIZES[qtype]
    if min(dims) == 0:
        raise h.fail(f"{where} has corrupted shape {dims} (a zero dimension)")
    if dims[0] % block:
        raise h.fail(f"{where} has shape {dims} and type {qtype.name}, whose rows come in blocks of {block} "
                     f"values: {dims[0]} is not a multiple (an inconsistent tensor type)")
    return qtype.name, int(np.prod(dims, dtype=object)) // block * type_size


def _check_tensor_data(h: _Header, infos: list[tuple[str, list[int], int, int]], alignment: int) -> None:
    """Each tensor's data inside the file, aligned, right after the one before it; no bytes left unaccounted for."""
    size, data_start = len(h.buf), -(-h.pos // alignment) * alignment
    names: set[str] = set()
    expected_offset = 0  # llama.cpp's rule: tensors follow each other in the listed order, each aligned
    for name, dims, ggml_type, offset in infos:
        where = f"tensor {name!r}"
        if name in names:
            raise h.fail(f"{where} appears twice")
        names.add(name)
        type_name, n_bytes = _tensor_bytes(h, name, dims, ggml_type)
        if offset % alignment:
            raise h.fail(f"{where} has data offset {offset}, not a multiple of the alignment {alignment}")
        end = data_start + offset + n_bytes
        if end > size:
            raise h.fail(f"truncated (or the shape or offset corrupted): {where} ({type_name} {dims}, {n_bytes} "
                         f"bytes) ends at byte {end}, past the end of the file ({size} bytes)")
        if offset != expected_offset:
            raise h.fail(f"{where} starts at data offset {offset}, but the tensors before it end at "
                         f"{expected_offset}: a corrupted offset, or a type or shape inconsistent with the data")
        expected_offset = -(-(offset + n_bytes) // alignment) * alignment
    if size - data_start > expected_offset + alignment:
        raise h.fail(f"the data section holds {size - data_start} bytes but its tensors only "
                     f"{expected_offset}: a tensor's type or shape is inconsistent with the data")


def open_gguf(path: str | os.PathLike):
    """A ``gguf.GGUFReader`` over ``path``, after :func:`check_gguf` has validated the whole file."""
    from gguf import GGUFReader

    check_gguf(path)
    try:
        return GGUFReader(str(path))
    except (ValueError, KeyError, IndexError, TypeError) as err:  # anything check_gguf did not foresee
        raise GGUFError(f"GGUF file {path}: {err}") from err


def path_of(reader) -> str:
    """The file a ``GGUFReader`` reads (for messages)."""
    return str(getattr(reader.data, "filename", None) or "(GGUF)")


def metadata(reader, key: str, kind: type | None = None) -> Any:
    """The value of metadata ``key`` (``kind`` = int, float or str checks its type); errors name file and key."""
    field = reader.fields.get(key)
    if field is None:
        raise GGUFError(f"GGUF file {path_of(reader)} has no metadata key {key!r}")
    value = field.contents()
    if kind is not None:
        if isinstance(value, np.generic):
            value = value.item()
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = isinstance(value, str) if kind is str else numeric and (kind is float or float(value).is_integer())
        if not ok:
            raise GGUFError(f"GGUF file {path_of(reader)}: metadata {key!r} should be {kind.__name__}, got {value!r}")
        value = kind(value)
    return value


def tensor_info(reader, name: str):
    """The ``gguf.ReaderTensor`` called ``name``; a missing one is named, with the file."""
    for t in reader.tensors:
        if t.name == name:
            return t
    raise GGUFError(f"GGUF file {path_of(reader)} has no tensor {name!r} ({len(reader.tensors)} tensors)")


def dequantized(reader, name: str) -> torch.Tensor:
    """Tensor ``name`` dequantized to float32 (shape: GGUF's dims reversed, i.e. ``(out, in)``), checked finite."""
    from gguf import quants

    t = tensor_info(reader, name)
    w = torch.from_numpy(np.array(quants.dequantize(t.data, t.tensor_type), dtype=np.float32))  # a copy
    bad = ~torch.isfinite(w)
    if bad.any():
        raise GGUFError(f"GGUF file {path_of(reader)}: tensor {name!r} holds {int(bad.sum())} non-finite values "
                        "(NaN or inf) after dequantization: the file is corrupted")
    return w
