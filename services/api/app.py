"""The HTTP routes: parse the request, call a handler (``handlers.py``), shape the answer.

Cross-cutting, for every request (``middleware.py``): a request id (``X-Request-ID``,
echoed, or a new one) in one log line with method, route, status and milliseconds;
Prometheus counters and a latency histogram; the body limit. Errors are JSON
``{"error", "request_id"}`` and never a stack trace (that goes to the log, under the same
request id).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path as PathLib
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, FastAPI, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api import handlers
from services.api.batching import Concurrency
from services.api.figures import PngCache
from services.api.metrics import CONTENT_TYPE, Metrics
from services.api.middleware import (
    BodyLimit,
    CountConcurrency,
    RequestLog,
    error_response,
    request_id_of,
)
from services.api.serving import ModelServer, NoModel
from services.api.uploads import Limits, UploadRejected
from shared.errors import PermanentError
from shared.settings import ApiSettings

logger = logging.getLogger("services.api")

MAX_MODEL_ID = 2**63 - 1
STATIC = PathLib(__file__).resolve().parent / "static"
# The page loads its own script, style and images (fetched with the token, shown as blob:
# URLs) and nothing else: no inline script, no other origin.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self' blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none';"
    " base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Named one by one (a route each, not a mounted folder): only these are served, and the
# metrics and the log name their route.
STATIC_FILES = {"page.js": "text/javascript", "page.css": "text/css"}
_SHA256 = r"^[0-9a-f]{64}$"


@dataclass
class Resources:
    """What the routes need, opened by the lifespan (``__main__`` decides how)."""

    pool: asyncpg.Pool
    server: ModelServer
    # The gallery's Grad-CAM overlays already drawn (they never change).
    overlays: PngCache = field(default_factory=PngCache)


# Opens the resources; the model server's batchers expect the concurrency the app counts.
Lifespan = Callable[[Metrics, Concurrency], AbstractAsyncContextManager[Resources]]


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread, a
# thread hop per request for nothing.
async def _resources(request: Request) -> Resources:
    return request.app.state.resources  # type: ignore[no-any-return]


Res = Annotated[Resources, Depends(_resources)]


def create_app(settings: ApiSettings, lifespan: Lifespan, version: dict[str, Any]) -> FastAPI:
    metrics = Metrics()
    concurrency = Concurrency()
    limits = Limits(settings.max_upload_bytes, settings.max_image_pixels, settings.max_images)
    token = settings.token.get_secret_value()

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(metrics, concurrency) as resources:
            app.state.resources = resources
            yield

    app = FastAPI(
        title="chouette prediction API",
        version=str(version.get("version") or "unknown"),
        description="Classify vineyard photos (vine, ground, grass) with the champion model"
        " or any trained model of the registry.",
        lifespan=app_lifespan,
        redoc_url=None,
    )

    async def authorized(request: Request) -> None:
        if not token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip(), token):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    Auth = Depends(authorized)

    # -- cross-cutting ----------------------------------------------------------------------

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), _rid(request), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(422, f"invalid request: {problems}", _rid(request))

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, exc: UploadRejected) -> Response:
        return error_response(exc.status, exc.message, _rid(request))

    @app.exception_handler(NoModel)
    async def no_model(request: Request, exc: NoModel) -> Response:
        return error_response(503, f"no model to serve: {exc}", _rid(request))

    @app.exception_handler(PermanentError)
    async def model_problem(request: Request, exc: PermanentError) -> Response:
        name = type(exc).__name__
        status = {"ModelNotFound": 404, "ModelNotReady": 409}.get(name, 422)
        return error_response(status, str(exc), _rid(request))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (see the server log)", _rid(request))

    # -- routes -----------------------------------------------------------------------------

    @app.get("/version", summary="software version and git commit")
    async def get_version() -> dict[str, Any]:
        return version

    @app.get("/health", summary="200 when the database answers and a model is loaded")
    async def get_health(res: Res) -> Response:
        healthy, body = await handlers.health(res.pool, res.server)
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/models", summary="the model registry, best first", dependencies=[Auth])
    async def get_models(
        res: Res, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        return await handlers.list_models(res.pool, limit)

    @app.get("/models/{model_id}", summary="one model and its evaluations", dependencies=[Auth])
    async def get_model(
        res: Res, model_id: Annotated[int, Path(ge=1, le=MAX_MODEL_ID)]
    ) -> dict[str, Any]:
        detail = await handlers.model_detail(res.pool, model_id)
        if detail is None:
            raise HTTPException(404, f"no model {model_id}")
        return detail

    @app.post(
        "/predict",
        summary="class probabilities of one or more images",
        description="Multipart form: one or more files in `images`, optional `model` (a model"
        " id; the champion by default). Concurrent calls are scored together in batches.",
        dependencies=[Auth],
    )
    async def post_predict(
        res: Res,
        images: Annotated[list[UploadFile] | None, File(description="image files")] = None,
        model: Annotated[int | None, Form(ge=1, le=MAX_MODEL_ID)] = None,
    ) -> dict[str, Any]:
        blobs = [(f.filename or f"image{i}", await f.read()) for i, f in enumerate(images or [])]
        served, body = await handlers.predict(res.server, blobs, model, limits)
        for p in body["predictions"]:
            metrics.predictions.labels(str(served.model_id), p["predicted"]).inc()
        return body

    @app.post(
        "/explain",
        summary="Grad-CAM overlay (PNG) of one image",
        description="Multipart form: one file in `image`, optional `model` id (the champion by"
        " default) and `class_name` (the predicted class by default). The PNG shows where the"
        " model's last convolution block found the class; the headers name the model, the"
        " class explained, its probability and the predicted class.",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        dependencies=[Auth],
    )
    async def post_explain(
        res: Res,
        image: Annotated[UploadFile | None, File(description="one image file")] = None,
        model: Annotated[int | None, Form(ge=1, le=MAX_MODEL_ID)] = None,
        class_name: Annotated[str | None, Form(max_length=100)] = None,
    ) -> Response:
        if image is None:
            raise UploadRejected(422, "no image: send one file in the form field 'image'")
        blob = (image.filename or "image", await image.read())
        served, explained = await handlers.explain(res.server, blob, model, class_name, limits)
        return Response(
            explained.png,
            media_type="image/png",
            headers={
                "X-Model-Id": str(served.model_id),
                "X-Explained-Class": explained.class_name,
                "X-Probability": f"{explained.probability:.6f}",
                "X-Predicted-Class": explained.predicted,
            },
        )

    # -- the results page (read-only) -------------------------------------------------------

    @app.get("/", summary="the results page (HTML)", include_in_schema=False)
    async def get_page() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/static/{name}", summary="the page's script and style", include_in_schema=False)
    async def get_static(name: str) -> Response:
        media_type = STATIC_FILES.get(name)
        if media_type is None:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=media_type, headers=PAGE_HEADERS)

    @app.get(
        "/api/requests",
        summary="recent requests, in flight first, with their progress",
        dependencies=[Auth],
    )
    async def get_requests(
        res: Res, limit: Annotated[int, Query(ge=1, le=200)] = 20
    ) -> dict[str, Any]:
        return await handlers.recent_requests(res.pool, limit)

    png: dict[str, Any] = {
        "response_class": Response,
        "responses": {200: {"content": {"image/png": {}}}},
    }

    @app.get("/models/{model_id}/curves.png", summary="training curves (PNG)",
             dependencies=[Auth], **png)  # fmt: skip
    async def get_curves(
        res: Res, model_id: Annotated[int, Path(ge=1, le=MAX_MODEL_ID)]
    ) -> Response:
        body = await handlers.curves_png(res.pool, model_id)
        if body is None:
            raise HTTPException(404, f"no model {model_id}, or no epoch recorded yet")
        return _png(body)

    @app.get("/evaluations/{evaluation_id}/confusion.png", summary="confusion matrix (PNG)",
             dependencies=[Auth], **png)  # fmt: skip
    async def get_confusion(
        res: Res, evaluation_id: Annotated[int, Path(ge=1, le=MAX_MODEL_ID)]
    ) -> Response:
        body = await handlers.confusion_png(res.pool, evaluation_id)
        if body is None:
            raise HTTPException(404, f"no evaluation {evaluation_id}")
        return _png(body)

    @app.get(
        "/evaluations/{evaluation_id}/misclassified",
        summary="the images an evaluation got wrong, most confident first",
        dependencies=[Auth],
    )
    async def get_misclassified(
        res: Res, evaluation_id: Annotated[int, Path(ge=1, le=MAX_MODEL_ID)]
    ) -> dict[str, Any]:
        body = await handlers.misclassified(res.pool, evaluation_id)
        if body is None:
            raise HTTPException(404, f"no evaluation {evaluation_id}")
        return body

    @app.get(
        "/evaluations/{evaluation_id}/misclassified/{sha256}.png",
        summary="Grad-CAM overlay (PNG) of the predicted class of a misclassified image",
        dependencies=[Auth],
        **png,
    )
    async def get_misclassified_overlay(
        res: Res,
        evaluation_id: Annotated[int, Path(ge=1, le=MAX_MODEL_ID)],
        sha256: Annotated[str, Path(pattern=_SHA256)],
    ) -> Response:
        body = await handlers.misclassified_overlay(
            res.pool, res.server, res.overlays, evaluation_id, sha256
        )
        if body is None:
            raise HTTPException(
                404, f"no misclassified image {sha256} in evaluation {evaluation_id}"
            )
        return _png(body)

    @app.get("/metrics", summary="Prometheus metrics", dependencies=[Auth])
    async def get_metrics(res: Res) -> Response:
        champion = res.server.champion
        if champion is not None:
            metrics.serving(champion.model_id, champion.spec.architecture)
        else:
            metrics.model_served.clear()
        return Response(metrics.text(), media_type=CONTENT_TYPE)

    counted = CountConcurrency(app, concurrency, "/predict")
    return RequestLog(BodyLimit(counted, settings.max_upload_bytes), metrics)  # type: ignore[return-value]


def _png(body: bytes) -> Response:
    # Private: the figures may sit behind a token; no-cache: they change as models train.
    return Response(body, media_type="image/png",
                    headers={"Cache-Control": "private, no-cache"})  # fmt: skip


def _rid(request: Request) -> str:
    return request_id_of(request.scope)
