"""Model weights and training checkpoints in PostgreSQL, streamed in parts of a few MiB.

Used by the trainer (store, checkpoint, resume) and by the evaluator and
``chouette predict`` (:func:`load_model`).

Stream format (one per stored model or checkpoint), rows ``(…, part, bytes)``::

    parts 0..n-1 (the body, in parts of at most DEFAULT_PART_BYTES; any cut reads back)
      b"CHWTS\\x00\\x01\\n"          8 bytes: magic + format version
      header length                 8 bytes, little-endian
      header                        JSON: format, kind, meta, tensors [{path, shape, dtype}]
      tensor data                   every tensor's bytes, C order, in header order
    part n                          the 32-byte sha256 of the body

``models.weights_sha256`` records that digest (hex) and ``models.weights_bytes`` the total
stored length, so a load is verified twice: against the digest part and against the row.
Variables are matched by order and shape (the network is rebuilt from its spec, so the
order is the one ``build_model`` gives); names are kept in the header for diagnostics.

Both directions stream: one tensor and a couple of parts are in memory at a time, so the
extra peak memory is a few parts plus the largest tensor (for ResNet152: ~35 MiB next to
its 223 MiB of weights). Each tensor's bytes are copied once on each side (out of
TensorFlow when storing; from the parts into its array when loading). The CPU work
(copying, hashing) runs in worker threads, overlapping the database I/O, so a long load
or store never blocks the event loop. On 2 cores, sha256 (~300 MiB/s) is the largest
share of both: ~0.4 s each way for ResNet50's 90 MiB.

Errors: :class:`CorruptWeights` (checksum or format) marks the model ``corrupt``;
:class:`WeightsMismatch` (the stored tensors do not fit the rebuilt network),
:class:`ModelNotFound` and :class:`ModelNotReady` are permanent too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import asyncpg
import numpy as np

from shared.errors import PermanentError
from shared.modeling import ModelSpec, build_model

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

MAGIC: Final = b"CHWTS\x00\x01\n"
FORMAT: Final = "chouette-weights/1"
DIGEST_BYTES: Final = 32
DEFAULT_PART_BYTES: Final = 4 * 1024 * 1024
_PREFIX = struct.Struct("<8sQ")

T = TypeVar("T")
Buffer = bytes | bytearray | memoryview


class CorruptWeights(PermanentError):
    """Stored weights fail their checksum or are not a weights stream: the model is unusable."""


class WeightsMismatch(PermanentError):
    """Stored tensors do not fit the network rebuilt from the model's spec."""


class ModelNotFound(PermanentError):
    """No model with this id."""


class ModelNotReady(PermanentError):
    """The model exists but has no usable weights (still training, failed or corrupt)."""


# -- writing ---------------------------------------------------------------------------------


@dataclass
class _Digest:
    sha256: str = ""
    nbytes: int = 0


def _tensor_specs(variables: Sequence[Any]) -> list[dict[str, Any]]:
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
        {"format": FORMAT, "kind": kind, "meta": meta or {}, "tensors": _tensor_specs(variables)}
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


async def _threaded(items: Iterator[T]) -> AsyncIterator[T]:
    """Run a blocking iterator in worker threads, one item ahead of the consumer."""
    done = object()
    pending = asyncio.ensure_future(asyncio.to_thread(next, items, done))
    try:
        while True:
            item = await pending
            if item is done:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(next, items, done))
            yield item  # type: ignore[misc]
    finally:
        await _settle(pending)


async def _settle(future: asyncio.Future[Any] | None) -> None:
    """Wait for a helper future we no longer need, ignoring its outcome."""
    if future is None or future.done():
        return
    future.cancel()
    try:
        await future
    except BaseException:
        pass


async def _stream_parts(
    variables: Sequence[Any], digest: _Digest, **kwargs: Any
) -> AsyncIterator[Buffer]:
    """Body parts then the 32-byte digest part; serializing, hashing and sending overlap."""
    sha = hashlib.sha256()
    hashing: asyncio.Future[None] | None = None
    total = 0
    try:
        async for part in _threaded(iter_body_parts(variables, **kwargs)):
            if hashing is not None:
                await hashing
            # hashlib releases the GIL: this runs beside the next part's serialization.
            hashing = asyncio.ensure_future(asyncio.to_thread(sha.update, part))
            total += len(part)
            yield part
        if hashing is not None:
            await hashing
    finally:
        await _settle(hashing)
    trailer = sha.digest()
    digest.sha256 = trailer.hex()
    digest.nbytes = total + len(trailer)
    yield trailer


async def _write_parts(
    con: asyncpg.Connection,
    table: str,
    key: tuple[Any, ...],
    columns: list[str],
    parts: AsyncIterator[Buffer],
) -> None:
    """One INSERT per part: the server stores a part while the next is serialized and hashed.

    Not ``COPY``: a binary ``COPY`` keeps up to 1000 rows in the server's memory before
    writing them (its byte limit does not count binary rows), so the whole model would be
    TOASTed only after the client has finished: ~0.4 s more for ResNet50 on 2 cores.
    (Pipelining the INSERTs, several parts per round trip, measured no faster.)
    """
    names = ", ".join(columns)
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    insert = await con.prepare(f"INSERT INTO {table} ({names}) VALUES ({values})")  # noqa: S608
    number = 0
    async for part in parts:
        await insert.fetch(*key, number, part)
        number += 1


async def store_weights(
    con: asyncpg.Connection,
    model_id: int,
    model: keras.Model,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> tuple[str, int]:
    """Write ``model``'s weights into ``model_weights`` (replacing any); return (sha256, bytes).

    Run it inside the transaction that also records the digest and sets
    ``models.status = 'trained'``, so a model is never marked trained without its weights.
    """
    digest = _Digest()
    started = time.monotonic()
    await con.execute("DELETE FROM model_weights WHERE model_id = $1", model_id)
    parts = _stream_parts(
        model.weights, digest, kind="weights", meta={"model_id": model_id}, part_bytes=part_bytes
    )
    await _write_parts(con, "model_weights", (model_id,), ["model_id", "part", "bytes"], parts)
    logger.info(
        "stored weights of model %d: %.1f MiB in %.2f s, sha256 %s",
        model_id, digest.nbytes / 2**20, time.monotonic() - started, digest.sha256[:12],
    )  # fmt: skip
    return digest.sha256, digest.nbytes


# -- reading ---------------------------------------------------------------------------------

Resolver = Callable[[dict[str, Any]], list[Any | None]]


@dataclass
class _StreamDecoder:
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


async def _read_stream(
    con: asyncpg.Connection, query: str, args: tuple[Any, ...], decoder: _StreamDecoder
) -> tuple[str, int]:
    """Stream the parts selected by ``query`` into ``decoder``; verify the digest part.

    Three things overlap: fetching the next part (event loop), hashing this part and
    decoding it into the model (two worker threads). Returns (sha256 hex, bytes read).
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=2)

    async def produce() -> None:
        async with con.transaction():
            async for row in con.cursor(query, *args, prefetch=1):
                await queue.put(row["bytes"])
        await queue.put(None)

    sha = hashlib.sha256()
    nbytes = 0
    previous: bytes | None = None
    producer = asyncio.ensure_future(produce())
    try:
        while True:
            get = asyncio.ensure_future(queue.get())
            await asyncio.wait({get, producer}, return_when=asyncio.FIRST_COMPLETED)
            if not get.done():
                get.cancel()
                producer.result()  # raises the producer's error
                continue
            part = get.result()
            if part is None:
                break
            nbytes += len(part)
            # The last part is the digest: a part is body once another follows it.
            if previous is not None:
                await asyncio.gather(
                    asyncio.to_thread(sha.update, previous),
                    asyncio.to_thread(decoder.feed, previous),
                )
            previous = part
        await producer
    finally:
        await _settle(producer)
    if previous is None:
        raise CorruptWeights("no weights stored")
    decoder.finish(nbytes)
    actual = sha.digest()
    if previous != actual:
        raise CorruptWeights(
            f"weights fail their checksum: sha256 {actual.hex()[:16]}… "
            f"!= stored {previous.hex()[:16]}…"
        )
    return actual.hex(), nbytes


def _match(kind: str, stored: list[dict[str, Any]], variables: Sequence[Any]) -> None:
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


async def read_weights_into(
    con: asyncpg.Connection, model_id: int, model: keras.Model
) -> tuple[str, int]:
    """Load ``model_weights`` of ``model_id`` into ``model``; return (sha256, bytes) read.

    Raises :class:`CorruptWeights` or :class:`WeightsMismatch`; does not touch ``models``.
    """
    variables = list(model.weights)

    def resolve(header: dict[str, Any]) -> list[Any | None]:
        _match("weights", header["tensors"], variables)
        return variables

    return await _read_stream(
        con,
        "SELECT bytes FROM model_weights WHERE model_id = $1 ORDER BY part",
        (model_id,),
        _StreamDecoder(resolve),
    )


_MODEL_COLUMNS = (
    "id, request_id, dataset_id, architecture, hyperparams, class_names, input_shape, status,"
    " weights_sha256, weights_bytes, library_versions, train_seconds, images_per_second,"
    " best_epoch, final_metrics, created_at, trained_at, weights_pruned_at"
)


def spec_from_row(row: Any) -> ModelSpec:
    """The spec of a ``models`` row (always ``weights="none"``: its own weights follow)."""
    hyper = row["hyperparams"] or {}
    return ModelSpec(
        architecture=row["architecture"],
        image_size=int(row["input_shape"][0]),
        class_names=tuple(row["class_names"]),
        dropout=float(hyper.get("dropout", 0.0)),
    )


async def mark_corrupt(con: asyncpg.Connection | asyncpg.Pool, model_id: int) -> None:
    """Record that the model's weights are corrupt, when this role may (the evaluator's
    and the owner's may; a read-only one, the API's, only reports it)."""
    try:
        await con.execute("UPDATE models SET status = 'corrupt' WHERE id = $1", model_id)
    except asyncpg.InsufficientPrivilegeError:
        logger.warning("model %d is corrupt; this role may not mark it so", model_id)


async def load_model(
    pool: asyncpg.Pool,
    model_id: int,
    *,
    build: Callable[[ModelSpec], keras.Model] = build_model,
) -> tuple[keras.Model, ModelSpec, dict[str, Any]]:
    """Rebuild model ``model_id`` from its recorded spec and load its verified weights.

    ``build`` (called in a worker thread) gives the network for the spec: a new one, or
    one of the same spec kept from an earlier load (the evaluator's), whose every variable
    is overwritten here.

    Returns ``(model, spec, row)`` where ``row`` is the ``models`` row as a dict (class
    names in output order, hyper-parameters, metrics…). The model is uncompiled, ready
    for ``model.predict`` on images from ``shared.images``.

    Raises :class:`ModelNotFound`, :class:`ModelNotReady` (status not ``trained``),
    :class:`WeightsMismatch`, or :class:`CorruptWeights` — the latter after setting
    ``models.status = 'corrupt'`` — all permanent errors with a one-line reason.
    """
    async with pool.acquire() as con:
        row = await con.fetchrow(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE id = $1",  # noqa: S608
            model_id,
        )
        if row is None:
            raise ModelNotFound(f"model {model_id} does not exist")
        if row["status"] == "corrupt":
            raise CorruptWeights(f"model {model_id} is marked corrupt: its weights failed a check")
        if row["status"] != "trained":
            raise ModelNotReady(f"model {model_id} has no weights yet (status {row['status']})")
        if row["weights_pruned_at"] is not None:
            raise ModelNotReady(
                f"model {model_id}'s weights were removed by `chouette prune` on"
                f" {row['weights_pruned_at']:%Y-%m-%d}"
            )
        spec = spec_from_row(row)
        started = time.monotonic()
        model = await asyncio.to_thread(build, spec)
        built = time.monotonic()
        try:
            sha, nbytes = await read_weights_into(con, model_id, model)
            if sha != row["weights_sha256"] or nbytes != row["weights_bytes"]:
                raise CorruptWeights(
                    f"weights read ({nbytes} bytes, sha256 {sha[:16]}…) differ from the "
                    f"recorded ({row['weights_bytes']} bytes, sha256 "
                    f"{(row['weights_sha256'] or '')[:16]}…)"
                )
        except CorruptWeights as exc:
            await mark_corrupt(con, model_id)
            logger.error("model %d marked corrupt: %s", model_id, exc)
            raise CorruptWeights(f"model {model_id} is corrupt: {exc}") from exc
    logger.info(
        "loaded model %d (%s, %.1f MiB): network %.2f s, weights %.2f s",
        model_id, spec.architecture, nbytes / 2**20, built - started, time.monotonic() - built,
    )  # fmt: skip
    return model, spec, dict(row)


# -- checkpoints -----------------------------------------------------------------------------


async def save_checkpoint(
    con: asyncpg.Connection,
    model_id: int,
    epoch: int,
    model: keras.Model,
    optimizer_variables: Sequence[Any] = (),
    *,
    keep: Iterable[int] = (),
    meta: dict[str, Any] | None = None,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> int:
    """Store the checkpoint of ``epoch`` (weights, optimizer state, ``meta``); return its bytes.

    Replaces an older checkpoint of the same epoch and deletes those of epochs other than
    ``epoch`` and ``keep`` (e.g. the best epoch's, to restore at the end). Call it in
    the transaction that records the epoch.
    """
    weights = list(model.weights)
    optimizer = list(optimizer_variables)
    digest = _Digest()
    keep_epochs = sorted({epoch, *keep})
    await con.execute(
        "DELETE FROM model_checkpoints WHERE model_id = $1"
        " AND (epoch = $2 OR NOT (epoch = ANY($3::int[])))",
        model_id,
        epoch,
        keep_epochs,
    )
    parts = _stream_parts(
        [*weights, *optimizer],
        digest,
        kind="checkpoint",
        meta={**(meta or {}), "epoch": epoch, "n_model": len(weights)},
        part_bytes=part_bytes,
    )
    await _write_parts(
        con, "model_checkpoints", (model_id, epoch), ["model_id", "epoch", "part", "bytes"], parts
    )
    return digest.nbytes


async def checkpoint_epochs(con: asyncpg.Connection | asyncpg.Pool, model_id: int) -> list[int]:
    rows = await con.fetch(
        "SELECT DISTINCT epoch FROM model_checkpoints WHERE model_id = $1 ORDER BY epoch",
        model_id,
    )
    return [int(r["epoch"]) for r in rows]


async def load_checkpoint(
    con: asyncpg.Connection,
    model_id: int,
    epoch: int,
    model: keras.Model,
    optimizer_variables: Sequence[Any] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Load the checkpoint of ``epoch`` into ``model`` (and the optimizer's variables).

    Returns ``(optimizer_restored, meta)``: the optimizer state is restored only when
    ``optimizer_variables`` (built) match the stored ones; otherwise it is skipped (e.g.
    a checkpoint from the frozen-base phase resumed into the fine-tuning phase).
    Raises :class:`CorruptWeights` or :class:`WeightsMismatch`.
    """
    weights = list(model.weights)
    restored = False

    def resolve(header: dict[str, Any]) -> list[Any | None]:
        nonlocal restored
        n_model = int(header["meta"]["n_model"])
        stored = header["tensors"]
        _match("checkpoint", stored[:n_model], weights)
        rest: list[Any | None] = [None] * (len(stored) - n_model)
        if optimizer_variables is not None:
            try:
                _match("optimizer state", stored[n_model:], optimizer_variables)
            except WeightsMismatch as exc:
                logger.info("optimizer state not restored: %s", exc)
            else:
                rest = list(optimizer_variables)
                restored = True
        return [*weights, *rest]

    decoder = _StreamDecoder(resolve)
    await _read_stream(
        con,
        "SELECT bytes FROM model_checkpoints WHERE model_id = $1 AND epoch = $2 ORDER BY part",
        (model_id, epoch),
        decoder,
    )
    assert decoder.header is not None
    return restored, dict(decoder.header["meta"])


async def delete_checkpoints(con: asyncpg.Connection | asyncpg.Pool, model_id: int) -> None:
    await con.execute("DELETE FROM model_checkpoints WHERE model_id = $1", model_id)
