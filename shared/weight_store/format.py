"""The weights stream format: bytes only, no database, no TensorFlow.

One stream per stored model or checkpoint, cut into parts (rows ``(…, part, bytes)``)::

    parts 0..n-1 (the body, in parts of at most DEFAULT_PART_BYTES; any cut reads back)
      b"CHWTS\\x00\\x01\\n"          8 bytes: magic + format version
      header length                 8 bytes, little-endian
      header                        JSON: format, kind, meta, tensors [{path, shape, dtype}]
      tensor data                   every tensor's bytes, C order, in header order
    part n                          the 32-byte sha256 of the body (added by the writer)

Variables are matched by order and shape (the network is rebuilt from its spec, so the
order is the one ``build_model`` gives); names are kept in the header for diagnostics.
One tensor and a couple of parts are in memory at a time on either side, and each
tensor's bytes are copied once on each side.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from shared.errors import PermanentError

MAGIC: Final = b"CHWTS\x00\x01\n"
FORMAT: Final = "chouette-weights/1"
DIGEST_BYTES: Final = 32
DEFAULT_PART_BYTES: Final = 4 * 1024 * 1024
_PREFIX = struct.Struct("<8sQ")

Buffer = bytes | bytearray | memoryview


class CorruptWeights(PermanentError):
    """Stored weights fail their checksum or are not a weights stream: the model is unusable."""


class WeightsMismatch(PermanentError):
    """Stored tensors do not fit the network rebuilt from the model's spec."""


def tensor_specs(variables: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"path": str(v.path), "shape": [int(d) for d in v.shape], "dtype": str(v.dtype)}
        for v in variables
    ]


def iter_body_parts(
    variables: Sequence[Any],
    *,
    kind: str,
    meta: dict[str, Any] | None = None,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> Iterator[Buffer]:
    """Serialize ``variables`` (Keras/TF variables or arrays): magic, header, tensors, in parts.

    Every part holds at most ``part_bytes``. Small tensors are packed together; a tensor of
    at least a quarter part starts a part of its own and is cut into slices of its own
    array, so most of the bytes are copied once only (out of TensorFlow). Parts are bytes,
    bytearrays or memoryviews, none of them written to after it is yielded.

    Blocking (copies tensors out of TensorFlow); the digest part is added by the caller.
    """
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    header = json.dumps(
        {"format": FORMAT, "kind": kind, "meta": meta or {}, "tensors": tensor_specs(variables)}
    ).encode()
    large = max(1, part_bytes // 4)
    pending = bytearray()

    def put(view: memoryview) -> Iterator[Buffer]:
        nonlocal pending
        if len(view) >= large:
            if pending:
                yield pending
                pending = bytearray()
            for start in range(0, len(view), part_bytes):
                yield view[start : start + part_bytes]
            return
        while len(view):
            n = min(len(view), part_bytes - len(pending))
            pending += view[:n]
            view = view[n:]
            if len(pending) == part_bytes:
                yield pending
                pending = bytearray()

    yield from put(memoryview(_PREFIX.pack(MAGIC, len(header))))
    yield from put(memoryview(header))
    for v in variables:
        array = np.ascontiguousarray(v.numpy() if hasattr(v, "numpy") else np.asarray(v))
        yield from put(array.reshape(-1).view(np.uint8).data)
    if pending:
        yield pending


Resolver = Callable[[dict[str, Any]], list[Any | None]]


@dataclass
class StreamDecoder:
    """Parses the body parts of one stream in order; assigns tensors as they complete.

    ``resolve(header)`` returns, per header tensor, the variable to assign it to (or None
    to skip it); it may raise :class:`WeightsMismatch`. Hashing is done by the reader.
    A tensor's bytes are copied once, from the parts straight into a new array of its
    own, which is then assigned (and never written to again).
    """

    resolve: Resolver
    header: dict[str, Any] | None = None
    _small: bytearray = field(default_factory=bytearray)  # the prefix or the header so far
    _targets: list[Any | None] = field(default_factory=list)
    _index: int = 0
    _state: str = "prefix"
    _header_len: int = 0
    _array: np.ndarray | None = None  # the tensor being filled (None: skipped)
    _size: int = 0
    _filled: int = 0

    def feed(self, part: Buffer) -> None:
        view = memoryview(part).cast("B")
        more = True
        while more:
            view, more = self._step(view)

    def _step(self, view: memoryview) -> tuple[memoryview, bool]:
        """Consume what the current state can from ``view``: (the rest, go on?)."""
        if self._state in ("prefix", "header"):
            wanted = _PREFIX.size if self._state == "prefix" else self._header_len
            n = min(wanted - len(self._small), len(view))
            self._small += view[:n]
            if len(self._small) < wanted:
                return view[n:], False
            raw = bytes(self._small)
            self._small.clear()
            if self._state == "prefix":
                magic, self._header_len = _PREFIX.unpack(raw)
                if magic != MAGIC:
                    raise CorruptWeights("not a chouette weights stream (bad magic bytes)")
                self._state = "header"
            else:
                self._read_header(raw)
            return view[n:], True
        if self._state == "tensors":
            if not len(view):
                return view, False
            n = min(self._size - self._filled, len(view))
            if self._array is not None:
                dest = self._array.reshape(-1).view(np.uint8)
                dest[self._filled : self._filled + n] = np.frombuffer(view[:n], dtype=np.uint8)
            self._filled += n
            if self._filled == self._size:
                self._complete()
            return view[n:], True
        if len(view):
            raise CorruptWeights(f"{len(view)} unexpected bytes after the last tensor")
        return view, False

    def _read_header(self, raw: bytes) -> None:
        try:
            self.header = json.loads(raw)
        except ValueError as exc:
            raise CorruptWeights(f"unreadable weights header: {exc}") from exc
        if not isinstance(self.header, dict) or self.header.get("format") != FORMAT:
            raise CorruptWeights("weights header has an unknown format")
        self._targets = self.resolve(self.header)
        self._state = "tensors"
        self._next_tensor()

    def _next_tensor(self) -> None:
        """Prepare the array of tensor ``_index``; empty tensors complete at once."""
        assert self.header is not None
        tensors = self.header["tensors"]
        while self._index < len(tensors):
            spec = tensors[self._index]
            dtype = np.dtype(spec["dtype"])
            shape = tuple(int(d) for d in spec["shape"])
            self._size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            self._filled = 0
            target = self._targets[self._index]
            self._array = None if target is None else np.empty(shape, dtype=dtype)
            if self._size:
                return
            self._assign()
        self._state = "end"

    def _complete(self) -> None:
        self._assign()
        self._next_tensor()

    def _assign(self) -> None:
        target = self._targets[self._index]
        if target is not None:
            target.assign(self._array)
        self._array = None
        self._index += 1

    def finish(self, nbytes: int) -> None:
        if self._state != "end":
            raise CorruptWeights(
                f"weights stream truncated ({nbytes} bytes, stopped in {self._state})"
            )


def match_tensors(kind: str, stored: list[dict[str, Any]], variables: Sequence[Any]) -> None:
    if len(stored) != len(variables):
        raise WeightsMismatch(
            f"stored {kind} has {len(stored)} tensors, the rebuilt network {len(variables)}"
        )
    for spec, v in zip(stored, variables, strict=True):
        if list(spec["shape"]) != [int(d) for d in v.shape]:
            raise WeightsMismatch(
                f"stored {kind} tensor {spec['path']} has shape {spec['shape']}, "
                f"the rebuilt network's {v.path} {list(v.shape)}"
            )
