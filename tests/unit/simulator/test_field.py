"""The simulator's field dataset: deterministic, imbalanced, learnable; its admin API."""

from __future__ import annotations

import datetime as dt
import io

import aiohttp
import numpy as np
from PIL import Image

from services.simulator import field
from tests.plugins.simulator import SimulatorHandle

SEED = 2020


def images(start: dt.date, end: dt.date, tag: str) -> list[field.FieldImage]:
    return list(field.catalogue(start, end, tag, SEED))


def test_catalogue_is_deterministic_and_spans_2020_to_2022() -> None:
    a = images(dt.date(2019, 6, 1), dt.date(2023, 6, 1), "vine")
    b = images(dt.date(2019, 6, 1), dt.date(2023, 6, 1), "vine")
    assert a == b
    assert a[0].taken_at.year == 2020 and a[-1].taken_at.year == 2022
    assert field.render(a[0].image_id, "vine", SEED) == field.render(a[0].image_id, "vine", SEED)
    assert field.lookup(a[0].image_id, SEED) == a[0]
    assert field.lookup("20210101-vine-99", SEED) is None
    assert field.lookup("../../etc/passwd", SEED) is None


def test_datasets_are_small_and_imbalanced_like_the_real_one() -> None:
    winter = {t: len(images(dt.date(2021, 1, 1), dt.date(2021, 2, 28), t)) for t in field.TAGS}
    summer = {t: len(images(dt.date(2021, 6, 1), dt.date(2021, 7, 31), t)) for t in field.TAGS}
    assert winter["vine"] == 0 < winter["ground"]  # a class can be empty
    assert summer["vine"] > 2 * summer["grass"]
    week = sum(len(images(dt.date(2021, 6, 1), dt.date(2021, 6, 7), t)) for t in field.TAGS)
    assert 10 <= week <= 60


def _features(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((32, 24))
    pixels = np.asarray(img, dtype=np.float32) / 255
    columns = pixels.mean(axis=0)  # vertical structure (vine rows) survives averaging rows
    return np.concatenate([pixels.mean(axis=(0, 1)), pixels.std(axis=(0, 1)), columns.std(0)])


def test_classes_are_learnable_well_above_chance() -> None:
    """A nearest-centroid classifier on colour statistics, trained on 2021 and tested on
    2022, must beat chance (1/3) by far; a ResNet has much more to work with."""

    def load(year: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for label, tag in enumerate(field.TAGS):
            for image in images(dt.date(year, 5, 1), dt.date(year, 9, 30), tag)[:40]:
                xs.append(_features(field.render(image.image_id, tag, SEED)))
                ys.append(label)
        return np.array(xs), np.array(ys)

    x_train, y_train = load(2021)
    x_test, y_test = load(2022)
    centroids = np.stack([x_train[y_train == k].mean(0) for k in range(3)])
    predicted = np.argmin(((x_test[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    per_class = [float((predicted[y_test == k] == k).mean()) for k in range(3)]
    assert min(per_class) > 0.6, per_class


async def test_admin_api_changes_faults_and_counts(simulator: SimulatorHandle) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{simulator.url}/_simulator/faults", json={"latency": 0.01}) as r:
            assert r.status == 200
        assert simulator.faults.latency == 0.01
        async with session.put(f"{simulator.url}/_simulator/faults", json={"nope": 1}) as r:
            assert r.status == 400
        auth = aiohttp.BasicAuth(simulator.username, simulator.password)
        params = {"tag": "vine", "start_date": "2021-06-01", "end_date": "2021-06-07"}
        async with session.get(
            f"{simulator.url}/api/jobs/get-images/", params=params, auth=auth
        ) as r:
            entries = await r.json()
        assert len(entries) == 10
        async with session.get(f"{simulator.url}/_simulator/stats") as r:
            assert (await r.json())["listing"] == 1
        async with session.post(f"{simulator.url}/_simulator/reset") as r:
            assert r.status == 200
    assert simulator.faults.latency == 0.0
    assert simulator.stats["listing"] == 0


async def test_listing_requires_dates(simulator: SimulatorHandle) -> None:
    auth = aiohttp.BasicAuth(simulator.username, simulator.password)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{simulator.url}/api/jobs/get-images/", params={"tag": "vine"}, auth=auth
        ) as r,
    ):
        assert r.status == 400


def test_session_simulator_in_a_thread_serves_sync_callers(
    simulator_server: SimulatorHandle,
) -> None:
    import urllib.request

    simulator_server.set_faults(listing="empty")
    try:
        request = urllib.request.Request(
            f"{simulator_server.url}/api/jobs/get-images/"
            "?tag=vine&start_date=2021-06-01&end_date=2021-06-07",
            headers={"Authorization": "Basic ZmllbGQtdGVzdGVyOnMzY3JldC1ub3QtbG9nZ2Vk"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.read() == b"[]"
    finally:
        simulator_server.reset()
    assert simulator_server.faults.listing == "normal"
