"""Weights and checkpoints in PostgreSQL: ``model_weights`` and ``model_checkpoints`` parts.

Both directions stream (:mod:`shared.weight_store.format`): the CPU work (copying,
hashing) runs in worker threads, overlapping the database I/O, so a long load or store
never blocks the event loop. ``models.weights_sha256`` records the digest (hex) and
``models.weights_bytes`` the stored length, so a load is verified twice: against the digest
part and against the row.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg

from shared.weight_store.format import (
    DEFAULT_PART_BYTES,
    Buffer,
    CorruptWeights,
    StreamDecoder,
    WeightsMismatch,
    iter_body_parts,
    match_tensors,
)
from shared.weight_store.threads import settle, threaded

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


@dataclass
class _Digest:
    sha256: str = ""
    nbytes: int = 0


async def _stream_parts(
    variables: Sequence[Any], digest: _Digest, **kwargs: Any
) -> AsyncIterator[Buffer]:
    """Body parts then the 32-byte digest part; serializing, hashing and sending overlap."""
    sha = hashlib.sha256()
    hashing: asyncio.Future[None] | None = None
    total = 0
    try:
        async for part in threaded(iter_body_parts(variables, **kwargs)):
            if hashing is not None:
                await hashing
            # hashlib releases the GIL: this runs beside the next part's serialization.
            hashing = asyncio.ensure_future(asyncio.to_thread(sha.update, part))
            total += len(part)
            yield part
        if hashing is not None:
            await hashing
    finally:
        await settle(hashing)
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


async def _read_stream(
    con: asyncpg.Connection, query: str, args: tuple[Any, ...], decoder: StreamDecoder
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
        await settle(producer)
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


async def read_weights_into(
    con: asyncpg.Connection, model_id: int, model: keras.Model
) -> tuple[str, int]:
    """Load ``model_weights`` of ``model_id`` into ``model``; return (sha256, bytes) read.

    Raises :class:`CorruptWeights` or :class:`WeightsMismatch`; does not touch ``models``.
    """
    variables = list(model.weights)

    def resolve(header: dict[str, Any]) -> list[Any | None]:
        match_tensors("weights", header["tensors"], variables)
        return variables

    return await _read_stream(
        con,
        "SELECT bytes FROM model_weights WHERE model_id = $1 ORDER BY part",
        (model_id,),
        StreamDecoder(resolve),
    )


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
        match_tensors("checkpoint", stored[:n_model], weights)
        rest: list[Any | None] = [None] * (len(stored) - n_model)
        if optimizer_variables is not None:
            try:
                match_tensors("optimizer state", stored[n_model:], optimizer_variables)
            except WeightsMismatch as exc:
                logger.info("optimizer state not restored: %s", exc)
            else:
                rest = list(optimizer_variables)
                restored = True
        return [*weights, *rest]

    decoder = StreamDecoder(resolve)
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
