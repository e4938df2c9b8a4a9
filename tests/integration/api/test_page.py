"""The results page at ``/`` in a real headless browser, and the read-only endpoints it
polls, over real HTTP against real PostgreSQL.

The module's API (``conftest.api``) holds a tiny trained champion with one evaluation; this
module adds what a pipeline leaves behind: the champion's epochs, the evaluation's
predictions (two of them wrong) and a training request in flight at epoch 2/5. The browser
is Debian's ``chromium`` driven by its ``chromedriver`` through Selenium; ``.ci/run``
installs both, and the test fails (never skips) without them, so CI cannot pass silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localstack.servers import CHROMEDRIVER, CHROMIUM
from shared import db
from tests.integration.api.helpers import TOKEN, Api, run
from tests.integration.api.test_api import call
from tests.plugins import models
from tests.plugins.datasets import create_request

pytestmark = pytest.mark.integration

WAIT_S = 60


@dataclass
class Page:
    api: Api
    request_id: uuid.UUID
    wrong: list[str]  # sha256 of the misclassified images, most confident first
    right: str  # one correctly classified image


async def _seed_page(api: Api) -> Page:
    s = api.seeded
    pool = await db.create_pool(s.database_url)
    try:
        await pool.executemany(
            "INSERT INTO training_epochs (model_id, epoch, loss, accuracy, val_loss,"
            " val_accuracy) VALUES ($1, $2, $3, $4, $5, $6)",
            [(s.champion_id, e, 1.2 / e, 0.5 + 0.1 * e, 1.3 / e, 0.45 + 0.1 * e)
             for e in (1, 2, 3)],
        )  # fmt: skip
        images = await pool.fetch(
            "SELECT sha256, tag FROM dataset_images WHERE dataset_id = $1 ORDER BY sha256",
            s.dataset_id,
        )
        wrong = {images[0]["sha256"]: 0.9, images[1]["sha256"]: 0.6}
        for row in images:
            tag = row["tag"]
            predicted = (
                next(c for c in models.CLASSES if c != tag) if row["sha256"] in wrong else tag
            )
            p = wrong.get(row["sha256"], 0.8)
            probabilities = {c: (p if c == predicted else (1 - p) / 2) for c in models.CLASSES}
            await pool.execute(
                "INSERT INTO predictions (evaluation_id, sha256, true_label, predicted,"
                " probabilities) VALUES ($1, $2, $3, $4, $5)",
                s.evaluation_id, row["sha256"], tag, predicted, probabilities,
            )  # fmt: skip
        # The seeded models' requests finished (the harness leaves them queued).
        await pool.execute(
            "UPDATE training_requests SET status = 'succeeded', stage = 'done', finished_at = now()"
        )
        request_id = await create_request(
            pool, {"training": {"architecture": "ResNet50V2"}}, kind="training"
        )
        await pool.execute(
            "UPDATE training_requests SET status = 'running', stage = 'training',"
            " progress = 'training 2/5', progress_done = 2, progress_total = 5, model_id = $2"
            " WHERE id = $1",
            request_id,
            s.other_id,
        )
    finally:
        await pool.close()
    right = next(r["sha256"] for r in images if r["sha256"] not in wrong)
    return Page(api, request_id, list(wrong), right)


@pytest.fixture(scope="module")
def page(api: Api) -> Page:
    return run(_seed_page(api))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} missing: the page test needs Debian's browser"
            " (apt-get install chromium chromium-driver; `make test` and .ci/run install them"
            " when root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, what: str, script: str) -> Any:
    """Wait until ``script`` (a JavaScript expression) is truthy; its value."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(
            lambda d: d.execute_script(f"return {script}")
        )
    except TimeoutException:
        problem = driver.execute_script(
            "const p = document.getElementById('problem'); return p && p.textContent"
        )
        raise AssertionError(
            f"page: no {what} within {WAIT_S} s (page says: {problem!r})"
        ) from None


def _leaderboard_row(model_id: int) -> str:
    return f"document.querySelector('#leaderboard tr[data-model-id=\"{model_id}\"]')"


def _in_request_row(request_id: uuid.UUID, selector: str) -> str:
    return f"document.querySelector('#requests tr[data-request-id=\"{request_id}\"] {selector}')"


def _rendered(selector: str) -> str:
    """JS: the elements of ``selector`` when there is at least one and every one is an
    image really decoded (``naturalWidth`` > 0), else null."""
    return (
        f"(() => {{ const all = [...document.querySelectorAll({selector!r})];"
        " return all.length && all.every(i => i.complete && i.naturalWidth > 0)"
        " ? all.map(i => i.naturalWidth) : null; })()"
    )


def test_page_shows_requests_leaderboard_and_figures(
    page: Page, browser: Any, tmp_path: Path
) -> None:
    s = page.api.seeded
    browser.get(f"{page.api.url}/#token={TOKEN}")

    row = _wait(browser, "leaderboard row of the champion", _leaderboard_row(s.champion_id))
    assert "champion" in row.text and "ResNet50V2" in row.text
    assert _wait(browser, "second model's row", _leaderboard_row(s.other_id))

    progress = _wait(
        browser,
        "request in flight with a progress bar",
        _in_request_row(page.request_id, "progress"),
    )
    assert (progress.get_attribute("value"), progress.get_attribute("max")) == ("2", "5")
    request_row = browser.execute_script("return arguments[0].closest('tr')", progress)
    assert "training 2/5" in request_row.text and "running" in request_row.text
    assert "1 in flight" in browser.find_element("id", "in-flight").text

    assert _wait(browser, "rendered training curves", _rendered("#curves img.curves"))
    matrix = f"[data-evaluation-id='{s.evaluation_id}'] img.confusion"
    assert _wait(browser, "rendered confusion matrix", _rendered(matrix))
    widths = _wait(browser, "rendered misclassified gallery", _rendered(".gallery img.overlay"))
    assert len(widths) == len(page.wrong)
    captions = [e.text for e in browser.find_elements("css selector", ".gallery figcaption")]
    assert "(0.900)" in captions[0] and "(0.600)" in captions[1]  # most confident first

    # The token left the address bar at once (it stays in this tab's sessionStorage).
    assert browser.execute_script("return location.hash") == ""

    # The whole page in one image: a viewport as tall as the document.
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": min(int(height), 4000), "deviceScaleFactor": 1, "mobile": False},
    )
    screenshot = tmp_path / "page.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000


def test_page_asks_for_the_token_when_it_has_none(page: Page, browser: Any) -> None:
    browser.get(f"{page.api.url}/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{page.api.url}/")
    _wait(browser, "token form", "!document.getElementById('login').hidden")
    assert not browser.find_element("id", "content").is_displayed()
    browser.find_element("id", "token").send_keys(TOKEN)
    browser.find_element("css selector", "#login button").click()
    _wait(browser, "leaderboard after the token", _leaderboard_row(page.api.seeded.champion_id))
    assert not browser.find_element("id", "login").is_displayed()


# -- the endpoints the page polls (no browser) ------------------------------------------------


async def test_page_and_its_script_are_open_with_a_strict_policy(page: Page) -> None:
    status, body, headers = await call(page.api, "GET", "/", auth=False)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "/static/page.js" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, body, _ = await call(page.api, "GET", "/static/page.js", auth=False)
    assert status == 200 and "POLL_MS" in body
    status, _, _ = await call(page.api, "GET", "/static/index.html", auth=False)
    assert status == 404  # only the script and the style, by name
    _, metrics, _ = await call(page.api, "GET", "/metrics")
    assert 'route="/static/{name}",status="200"' in metrics


@pytest.mark.parametrize(
    "path",
    ["/api/requests", "/models/1/curves.png", "/evaluations/1/confusion.png",
     "/evaluations/1/misclassified", f"/evaluations/1/misclassified/{'0' * 64}.png"],
)  # fmt: skip
async def test_page_data_needs_the_token(page: Page, path: str) -> None:
    status, body, _ = await call(page.api, "GET", path, auth=False)
    assert status == 401, body


async def test_requests_in_flight_first_with_progress(page: Page) -> None:
    s = page.api.seeded
    status, body, _ = await call(page.api, "GET", "/api/requests")
    assert status == 200
    first = body["requests"][0]
    assert first["request_id"] == str(page.request_id) and first["in_flight"]
    assert (first["done"], first["total"], first["model_id"]) == (2, 5, s.other_id)
    assert body["in_flight"] == 1


async def test_figures_and_gallery(page: Page) -> None:
    s = page.api.seeded
    for path in (f"/models/{s.champion_id}/curves.png",
                 f"/evaluations/{s.evaluation_id}/confusion.png",
                 f"/evaluations/{s.evaluation_id}/misclassified/{page.wrong[0]}.png"):  # fmt: skip
        async with (
            aiohttp.ClientSession() as session,
            session.get(page.api.url + path, headers=page.api.headers) as resp,
        ):
            assert (resp.status, resp.content_type) == (200, "image/png"), path
            assert (await resp.read())[:8] == b"\x89PNG\r\n\x1a\n"
    status, body, _ = await call(page.api, "GET", f"/evaluations/{s.evaluation_id}/misclassified")
    assert status == 200
    assert [i["sha256"] for i in body["items"]] == page.wrong
    assert body["items"][0]["overlay"].endswith(f"/misclassified/{page.wrong[0]}.png")
    # Overlays are drawn once, then served from the API's cache.
    overlays = page.api.thread.app.state.resources.overlays
    assert (s.evaluation_id, page.wrong[0]) in overlays


@pytest.mark.parametrize("case", ["no epochs", "no evaluation", "right image", "bad sha"])
async def test_figures_missing_are_404_or_422(page: Page, case: str) -> None:
    s = page.api.seeded
    path, expected = {
        "no epochs": (f"/models/{s.other_id}/curves.png", 404),
        "no evaluation": ("/evaluations/999999/confusion.png", 404),
        "right image": (f"/evaluations/{s.evaluation_id}/misclassified/{page.right}.png", 404),
        "bad sha": (f"/evaluations/{s.evaluation_id}/misclassified/{'Z' * 64}.png", 422),
    }[case]
    status, body, _ = await call(page.api, "GET", path)
    assert status == expected, body


async def _advance(page: Page) -> uuid.UUID:
    """The request in flight reaches epoch 3/5; another fails with an error quoting HTML
    and a terminal escape (as an answer of the Chouette API could)."""
    pool = await db.create_pool(page.api.seeded.database_url)
    try:
        await pool.execute(
            "UPDATE training_requests SET progress = 'training 3/5', progress_done = 3"
            " WHERE id = $1",
            page.request_id,
        )
        failed = await create_request(pool, {"training": {}}, kind="training")
        await pool.execute(
            "UPDATE training_requests SET status = 'failed', stage = 'fetching',"
            " error = $2, finished_at = now() WHERE id = $1",
            failed,
            "API said <img src=x onerror=alert(1)><b>no</b>\x1b[31m",
        )
    finally:
        await pool.close()
    return failed


def test_page_follows_changes_and_shows_errors_as_text(page: Page, browser: Any) -> None:
    browser.get(f"{page.api.url}/#token={TOKEN}")
    _wait(browser, "progress bar", _in_request_row(page.request_id, "progress"))
    failed = run(_advance(page))
    value = _wait(
        browser,
        "progress 3/5 without reloading",
        f"(() => {{ const p = {_in_request_row(page.request_id, 'progress')};"
        " return p && p.value === 3 ? p.value : null; })()",
    )
    assert value == 3
    error = _wait(browser, "the failed request's error", _in_request_row(failed, "td.error"))
    assert error.text == "API said <img src=x onerror=alert(1)><b>no</b>\\x1b[31m"
    assert not error.find_elements("css selector", "img, b")
