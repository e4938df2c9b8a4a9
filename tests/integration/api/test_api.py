"""Every endpoint of the prediction API over real HTTP, against real PostgreSQL.

One tiny ResNet50V2 (32 px) is stored in PostgreSQL for the module and made champion;
a copy of it is a second model. The champion-change test runs last (it moves the champion).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import subprocess
from typing import Any

import aiohttp
import numpy as np
import pytest
from PIL import Image

from shared import champions, db
from shared.inference import BatchDecoder, Predictor
from shared.logs import _RequestIdFilter
from tests.integration.api.helpers import Api
from tests.plugins import models
from tests.plugins.datasets import photo

pytestmark = pytest.mark.integration


def form(
    images: list[tuple[str, bytes]], model: int | None = None, field: str = "images"
) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, blob in images:
        data.add_field(field, blob, filename=name, content_type="image/jpeg")
    if model is not None:
        data.add_field("model", str(model))
    return data


async def call(
    api: Api, method: str, path: str, *, auth: bool = True, **kw: Any
) -> tuple[int, Any, dict[str, str]]:
    headers = dict(kw.pop("headers", {}))
    if auth:
        headers.update(api.headers)
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, headers=headers, **kw) as resp,
    ):
        body: Any
        if resp.content_type == "application/json":
            body = await resp.json()
        else:
            body = await resp.text()
        return resp.status, body, dict(resp.headers)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 60)).save(out, format="PNG")
    return out.getvalue()


async def test_version_names_the_package_and_the_git_commit(api: Api) -> None:
    from importlib import metadata

    status, body, _ = await call(api, "GET", "/version", auth=False)
    assert status == 200
    assert body["version"] == metadata.version("chouette-pipeline")
    head = await asyncio.to_thread(subprocess.check_output, ["git", "rev-parse", "HEAD"], text=True)
    assert body["git_commit"] == head.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", body["git_commit"])


async def test_health_is_200_with_the_champion_loaded(api: Api) -> None:
    status, body, _ = await call(api, "GET", "/health", auth=False)
    assert status == 200, body
    assert body == {
        "status": "ok",
        "database": "ok",
        "model_id": api.seeded.champion_id,
        "architecture": "ResNet50V2",
    }


async def test_docs_and_openapi_describe_every_endpoint(api: Api) -> None:
    status, spec, _ = await call(api, "GET", "/openapi.json", auth=False)
    assert status == 200
    paths = {"/version", "/health", "/models", "/models/{model_id}", "/predict", "/explain"}
    assert paths | {"/metrics"} <= set(spec["paths"])
    status, page, _ = await call(api, "GET", "/docs", auth=False)
    assert status == 200 and "swagger" in page.lower()


async def test_data_endpoints_need_the_bearer_token(api: Api) -> None:
    for method, path in (("GET", "/models"), ("GET", "/metrics"), ("POST", "/predict")):
        status, body, headers = await call(api, method, path, auth=False)
        assert status == 401, (path, body)
        assert body["error"] == "missing or wrong bearer token"
        assert headers["WWW-Authenticate"] == "Bearer"
        status, _, _ = await call(
            api, method, path, auth=False, headers={"Authorization": "Bearer wrong"}
        )
        assert status == 401


async def test_models_lists_the_registry_and_one_model_has_its_evaluations(api: Api) -> None:
    s = api.seeded
    status, body, _ = await call(api, "GET", "/models")
    assert status == 200
    rows = {m["model_id"]: m for m in body["models"]}
    assert set(rows) == {s.champion_id, s.other_id}
    assert rows[s.champion_id]["champion"] is True
    assert rows[s.other_id]["champion"] is False
    assert rows[s.champion_id]["architecture"] == "ResNet50V2"

    status, detail, _ = await call(api, "GET", f"/models/{s.champion_id}")
    assert status == 200
    assert detail["class_names"] == list(models.CLASSES)
    assert detail["champion"] is True and detail["status"] == "trained"
    [evaluation] = detail["evaluations"]
    assert evaluation["evaluation_id"] == s.evaluation_id
    assert evaluation["macro_f1"] == pytest.approx(0.75)
    assert evaluation["confusion_matrix"] == [[2, 0, 0], [0, 1, 1], [1, 0, 1]]

    status, body, _ = await call(api, "GET", "/models/999999")
    assert status == 404 and body["error"] == "no model 999999"
    status, body, _ = await call(api, "GET", "/models/0")
    assert status == 422 and "model_id" in body["error"]


async def test_predict_gives_the_evaluators_probabilities(api: Api) -> None:
    """As the evaluator scores by default: with test-time augmentation (API_TTA)."""
    images = [("vine.jpg", photo("vine", 0)), ("grass.jpg", photo("grass", 1))]
    status, body, _ = await call(api, "POST", "/predict", data=form(images))
    assert status == 200, body
    assert body["model_id"] == api.seeded.champion_id
    assert body["class_names"] == list(models.CLASSES)
    assert body["test_time_augmentation"] is True
    pixels = BatchDecoder(32)([b for _, b in images])
    expected = Predictor(api.model, 32, tta=True)(pixels)
    plain = Predictor(api.model, 32)(pixels)
    assert not np.allclose(expected, plain, atol=1e-4)  # this test tells them apart
    for prediction, row, (name, _) in zip(body["predictions"], expected, images, strict=True):
        assert prediction["image"] == name
        probs = [prediction["probabilities"][c] for c in models.CLASSES]
        np.testing.assert_allclose(probs, row, atol=1e-5)
        assert prediction["predicted"] == models.CLASSES[int(np.argmax(row))]

    status, body, _ = await call(
        api, "POST", "/predict", data=form(images[:1], model=api.seeded.other_id)
    )
    assert status == 200, body
    assert body["model_id"] == api.seeded.other_id
    np.testing.assert_allclose(
        [body["predictions"][0]["probabilities"][c] for c in models.CLASSES],
        expected[0],
        atol=1e-5,
    )


async def test_predict_limits_and_bad_input_are_clear_json_errors(api: Api) -> None:
    one = [("a.jpg", photo("vine", 0))]
    cases = [
        (form(one * 5), 422, "5 images in one call, at most 4 (API_MAX_IMAGES)"),
        (form([("big.png", png(101, 100))]), 413, "'big.png' is too large: 101 x 100 pixels"),
        (form([("notes.txt", b"not an image at all")]), 422, "'notes.txt' is not a readable"),
        (form([]), 422, "no image"),
        (form(one, model=999999), 404, "model 999999 does not exist"),
        (form(one, model=0), 422, "model"),
    ]
    for data, expected_status, text in cases:
        status, body, _ = await call(api, "POST", "/predict", data=data)
        assert status == expected_status, (text, body)
        assert text in body["error"], body
        assert "Traceback" not in str(body)
    # A body above API_MAX_UPLOAD_BYTES, declared (Content-Length) or streamed (chunked).
    big = [("huge.jpg", b"\xff\xd8\xff" + bytes(2 << 20))]
    status, body, _ = await call(api, "POST", "/predict", data=form(big))
    assert status == 413 and "API_MAX_UPLOAD_BYTES" in body["error"]

    async def chunks() -> Any:  # no Content-Length: refused once the bytes read pass it
        yield (
            b'--x\r\nContent-Disposition: form-data; name="images"; filename="huge.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff"
        )
        for _ in range(40):
            yield bytes(64 << 10)
        yield b"\r\n--x--\r\n"

    status, body, _ = await call(
        api,
        "POST",
        "/predict",
        data=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert status == 413 and "API_MAX_UPLOAD_BYTES" in body["error"], body


def broken_png() -> bytes:
    """A PNG whose header reads (40 x 40) and whose pixel data does not decode."""
    whole = png(40, 40)
    data = whole.index(b"IDAT") + 14
    return whole[:data] + bytes(len(whole) - data - 12) + whole[-12:]


async def test_an_image_that_does_not_decode_fails_only_its_own_request(api: Api) -> None:
    """Scored in the same batch as good images, a broken one fails its request alone,
    with the reason and without TensorFlow's graph trace."""
    good = [form([(f"{i}.jpg", photo("vine", i))]) for i in range(6)]
    answers = await asyncio.gather(
        *(call(api, "POST", "/predict", data=f) for f in good),
        call(api, "POST", "/predict", data=form([("broken.png", broken_png())])),
    )
    assert [status for status, _, _ in answers] == [200] * 6 + [422], answers
    error = answers[-1][1]["error"]
    assert "cannot be decoded" in error and "Invalid PNG data" in error, error
    assert 'File "' not in error and "[[" not in error


async def test_explain_answers_the_grad_cam_overlay_of_one_image(api: Api) -> None:
    from shared.gradcam import Explainer

    data = photo("grass", 4, width=80, height=60)
    async with (
        aiohttp.ClientSession(headers=api.headers) as session,
        session.post(api.url + "/explain", data=form([("g.jpg", data)], field="image")) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "image/png"
        png_bytes = await resp.read()
        headers = resp.headers
    expected = Explainer(api.model, models.SPEC).explain(data)
    assert headers["X-Model-Id"] == str(api.seeded.champion_id)
    assert headers["X-Explained-Class"] == expected.class_name == headers["X-Predicted-Class"]
    assert float(headers["X-Probability"]) == pytest.approx(expected.probability, abs=1e-5)
    assert png_bytes == expected.png
    with Image.open(io.BytesIO(png_bytes)) as img:
        assert img.size == (80, 60)

    extra = aiohttp.FormData()
    extra.add_field("image", data, filename="g.jpg")
    extra.add_field("class_name", "weed")
    status, body, _ = await call(api, "POST", "/explain", data=extra)
    assert status == 422 and "class 'weed' is not one of model" in body["error"]
    status, body, _ = await call(api, "POST", "/explain", data=form([]))
    assert status == 422 and "no image" in body["error"]


async def test_concurrent_requests_are_scored_in_shared_batches(api: Api) -> None:
    async def metric(name: str) -> float:
        _, text, _ = await call(api, "GET", "/metrics")
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    calls_before = await metric("chouette_api_batch_images_count")
    images_before = await metric("chouette_api_batch_images_sum")
    n = 16
    results = await asyncio.gather(
        *(
            call(api, "POST", "/predict", data=form([(f"{i}.jpg", photo("ground", i))]))
            for i in range(n)
        )
    )
    assert all(status == 200 for status, _, _ in results), results
    model_calls = await metric("chouette_api_batch_images_count") - calls_before
    assert await metric("chouette_api_batch_images_sum") - images_before == n
    assert model_calls < n / 2, f"{n} requests took {model_calls} model calls"


async def test_metrics_count_requests_latency_predictions_and_the_model(api: Api) -> None:
    images = [("v.jpg", photo("vine", 3))]
    status, body, _ = await call(api, "POST", "/predict", data=form(images))
    assert status == 200
    predicted = body["predictions"][0]["predicted"]
    status, text, headers = await call(api, "GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    champion = api.seeded.champion_id
    assert re.search(
        r'^chouette_api_requests_total\{method="POST",route="/predict",status="200"\} [1-9]',
        text,
        re.M,
    )
    assert re.search(r'^chouette_api_request_seconds_bucket\{le="\+Inf",route="/predict"\} [1-9]',
                     text, re.M)  # fmt: skip
    labels = f'model_id="{champion}",predicted="{predicted}"'
    assert re.search(rf"^chouette_api_predictions_total\{{{labels}\}} [1-9]", text, re.M)
    assert f'chouette_api_model_served{{architecture="ResNet50V2",model_id="{champion}"}} 1.0' in (
        text
    )


async def test_one_log_line_per_request_with_its_request_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(_RequestIdFilter())
    with caplog.at_level(logging.INFO, logger="services.api"):
        status, _, headers = await call(
            api, "GET", "/models", headers={"X-Request-ID": "req-abc.123"}
        )
        _, _, other = await call(api, "GET", "/version")
    assert status == 200 and headers["X-Request-ID"] == "req-abc.123"
    assert re.fullmatch(r"[0-9a-f]{16}", other["X-Request-ID"])  # none sent: a new one
    lines = [r for r in caplog.records if r.name == "services.api"]
    mine = [r for r in lines if getattr(r, "request_id", None) == "req-abc.123"]
    assert len(mine) == 1
    assert re.fullmatch(r"GET /models 200 \d+\.\d ms", mine[0].getMessage())


async def test_a_model_that_cannot_load_is_an_error_without_a_stack_trace(api: Api) -> None:
    pool = await db.create_pool(api.seeded.database_url)
    try:
        async with pool.acquire() as con:
            broken = await models.copy_model(con, api.seeded.champion_id)
            await con.execute("DELETE FROM model_weights WHERE model_id = $1 AND part = 1", broken)
    finally:
        await pool.close()
    status, body, _ = await call(api, "POST", "/predict", data=form([("a.jpg", photo("vine", 0))],
                                                                   model=broken))  # fmt: skip
    assert status == 422, body
    assert f"model {broken} is corrupt" in body["error"]
    assert "Traceback" not in body["error"] and 'File "' not in body["error"]
    assert re.fullmatch(r"[0-9a-f]{16}", body["request_id"])


async def test_champion_change_is_served_without_failing_requests_in_flight(api: Api) -> None:
    """Requests keep coming while the champion moves to the other model (NOTIFY): every
    one succeeds, on the old model until the new one is loaded, then on the new one."""
    s = api.seeded
    stop = asyncio.Event()
    answers: list[tuple[int, Any]] = []

    async def client(i: int) -> None:
        while not stop.is_set():
            status, body, _ = await call(
                api, "POST", "/predict", data=form([(f"{i}.jpg", photo("vine", i))])
            )
            answers.append((status, body))

    clients = [asyncio.create_task(client(i)) for i in range(4)]
    try:
        await asyncio.sleep(0.5)
        pool = await db.create_pool(s.database_url)
        try:
            await champions.promote(pool, s.other_id)  # what `chouette promote` does
        finally:
            await pool.close()
        for _ in range(600):
            _, health, _ = await call(api, "GET", "/health", auth=False)
            if health.get("model_id") == s.other_id:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"champion not reloaded: {health}")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200]
    served = [body["model_id"] for _, body in answers]
    assert served[0] == s.champion_id and served[-1] == s.other_id
    assert set(served) == {s.champion_id, s.other_id}
