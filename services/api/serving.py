"""The models the API serves: the champion, and a few others asked for by id.

Each is rebuilt from PostgreSQL by ``shared.weight_store.load_model`` (checksum verified)
and wrapped in the evaluator's inference path (``shared.inference``: ``BatchDecoder`` for
the training's pixels, ``Predictor`` in inference mode, with the evaluator's test-time
augmentation unless ``API_TTA=false``), traced once before it serves, and
fed through a :class:`~services.api.batching.Batcher`: the encoded images of concurrent
requests are decoded and scored together, one decode and one model call per batch, on one
inference thread, never on the event loop.

Champion changes arrive as PostgreSQL notifications (:func:`follow_champion`): the new
model is loaded beside the old one and swapped in only when ready; a request holds the
model it started with, so a request in flight finishes on it and none fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from services.api import store
from services.api.batching import Batcher, Concurrency
from shared.errors import PermanentError
from shared.gradcam import Explainer
from shared.inference import BatchDecoder, Predictor
from shared.modeling import ModelSpec
from shared.settings import ApiSettings
from shared.weight_store import load_model

logger = logging.getLogger(__name__)

LoadModel = Callable[[asyncpg.Pool, int], Awaitable[tuple[Any, ModelSpec, dict[str, Any]]]]


class NoModel(Exception):
    """No model to serve (no champion yet, or it cannot be loaded): 503 with the reason."""


@dataclass
class ServedModel:
    model_id: int
    spec: ModelSpec
    model: Any  # the Keras model (Grad-CAM needs its layers)
    batcher: Batcher[bytes]
    executor: ThreadPoolExecutor  # the inference thread
    tta: bool = False  # predictions averaged over each image's 8 flips/turns
    _explainer: Any = None

    async def explain(self, data: bytes, class_name: str | None) -> Any:
        """Grad-CAM of one image (``shared.gradcam.Explanation``) on the inference thread."""

        def run() -> Any:
            if self._explainer is None:
                self._explainer = Explainer(self.model, self.spec)
            return self._explainer.explain(data, class_name)

        return await asyncio.get_running_loop().run_in_executor(self.executor, run)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    async def predict(self, blobs: Sequence[bytes]) -> npt.NDArray[np.float32]:
        """Class probabilities (one row per image); decoding and the model off the loop."""
        return await self.batcher(blobs)


class ModelServer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: ApiSettings,
        *,
        load: LoadModel | None = None,
        concurrency: Concurrency | None = None,
    ) -> None:
        if load is None:
            load = load_model
        self.pool = pool
        self.settings = settings
        self._load_model = load
        self.concurrency = concurrency  # /predict requests open at once (the HTTP layer counts)
        self._models: OrderedDict[int, ServedModel] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}
        self._refresh_lock = asyncio.Lock()
        # One thread for every model call: the calls of a CPU run one after the other anyway.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.champion: ServedModel | None = None
        self.champion_problem: str | None = "no champion yet (chouette promote MODEL)"
        self.on_champion: Callable[[ServedModel], None] | None = None
        self.on_batch: Callable[[int], None] | None = None  # images per model call

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def get(self, model_id: int | None = None) -> ServedModel:
        """The model ``model_id`` (loaded on first use), or the champion when None.

        Raises :class:`NoModel` (no champion) or the weight store's ``PermanentError``s
        (``ModelNotFound``, ``ModelNotReady``, ``CorruptWeights``...)."""
        champion = self.champion
        if model_id is None:
            if champion is None:
                raise NoModel(self.champion_problem or "no champion")
            return champion
        if champion is not None and champion.model_id == model_id:
            return champion
        return await self._load(model_id)

    async def _load(self, model_id: int) -> ServedModel:
        served = self._models.get(model_id)
        if served is not None:
            self._models.move_to_end(model_id)
            return served
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        async with lock:  # two requests for a model not loaded yet: load it once
            served = self._models.get(model_id)
            if served is not None:
                return served
            model, spec, _row = await self._load_model(self.pool, model_id)
            served = await asyncio.to_thread(self._prepare, model_id, model, spec)
            self._models[model_id] = served
            self._evict()
            return served

    def _prepare(self, model_id: int, model: Any, spec: ModelSpec) -> ServedModel:
        """Trace the decoder and the model once (seconds), before the first request."""
        predictor = Predictor(model, spec.image_size, tta=self.settings.tta)
        decoder = BatchDecoder(spec.image_size)
        predictor.warm_up()
        decoder.warm_up()
        batcher: Batcher[bytes] = Batcher(
            lambda blobs: predictor(decoder(blobs)),
            max_batch=self.settings.batch_size,
            wait_s=self.settings.batch_wait_ms / 1000,
            executor=self.executor,
            on_batch=self._batched,
            concurrency=self.concurrency,
        )
        return ServedModel(model_id, spec, model, batcher, self.executor, self.settings.tta)

    def _batched(self, n_images: int) -> None:
        if self.on_batch is not None:
            self.on_batch(n_images)

    def _evict(self) -> None:
        champion_id = None if self.champion is None else self.champion.model_id
        for model_id in list(self._models):
            if len(self._models) <= self.settings.model_cache:
                break
            if model_id != champion_id:  # requests in flight keep their own reference
                del self._models[model_id]

    async def refresh_champion(self) -> None:
        """Serve the champion recorded in PostgreSQL; the old one until the new one is loaded."""
        async with self._refresh_lock:
            row = await store.served_champion(self.pool)
            if row is None:
                if self.champion is not None:
                    logger.info("no champion any more; model %d no longer served by default",
                                self.champion.model_id)  # fmt: skip
                self.champion = None
                self.champion_problem = "no champion yet (chouette promote MODEL)"
                return
            model_id = int(row["model_id"])
            if self.champion is not None and self.champion.model_id == model_id:
                return
            try:
                served = await self._load(model_id)
            except PermanentError as exc:
                self.champion_problem = f"champion model {model_id} cannot be served: {exc}"
                logger.error("%s", self.champion_problem)
                if self.champion is None:
                    return
                logger.error("still serving model %d", self.champion.model_id)
                return
            previous = self.champion
            self.champion, self.champion_problem = served, None
            self._evict()
            logger.info(
                "serving champion model %d (%s, %s)%s",
                model_id, served.spec.architecture, row["reason"],
                "" if previous is None else f", replacing model {previous.model_id}",
            )  # fmt: skip
            if self.on_champion is not None:
                self.on_champion(served)


async def follow_champion(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    server: ModelServer,
    *,
    recheck_s: float = 30.0,
) -> None:
    """Reload the champion on every ``chouette_champions`` notification (and every
    ``recheck_s``, and after a reconnection, in case one was missed). Runs until cancelled."""
    changed = asyncio.Event()
    con: asyncpg.Connection | None = None

    def on_notify(*_args: object) -> None:
        changed.set()

    try:
        while True:
            try:
                if con is None or con.is_closed():
                    con = await connect()
                    await con.add_listener(store.CHAMPIONS_CHANNEL, on_notify)
                    changed.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), recheck_s)
                changed.clear()
                await server.refresh_champion()
            except Exception as exc:  # the database went away, a model failed to load...
                logger.warning("following the champion: %s; retrying", exc)
                if con is not None:
                    with contextlib.suppress(Exception):
                        await con.close()
                con = None
                await asyncio.sleep(1.0)
    finally:
        if con is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(con.close(), 5)
