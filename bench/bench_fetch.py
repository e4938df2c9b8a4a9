"""Fetch benchmark: the project's fetcher against a sequential download loop, same run.

    .venv/bin/python -m bench.bench_fetch [--images 500] [--latency-ms 20] [--concurrency N]

The simulator runs in its own process (as the real API would be elsewhere) and answers
every request after ``--latency-ms``. Both sides download and validate (sha256 + Pillow)
the same ``--images`` links, listed once beforehand; the images are rendered once before
timing so neither side pays for the simulator's cache warming. No PostgreSQL: this
measures the network part of the fetcher (client + validation), not storage.

- baseline: ``for link in links: GET, read, validate`` on one aiohttp session;
- fetcher: :class:`ChouetteClient` downloads with ``--concurrency`` requests in flight and
  validation off the event loop, as :class:`DatasetBuilder` does.

The latency-bound ideal for concurrency C is ``ceil(N / C) * latency``. The fetcher is
timed three times; the median counts. Last line: the JSON verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from services.fetcher.client import ChouetteClient
from services.fetcher.validation import check_image, validate_image
from shared import runtime
from shared.settings import FetcherSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 15.0
TARGET_IDEAL_SHARE = 0.8
MAX_PIXELS = 50_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SIMULATOR_HOST": "127.0.0.1",
        "SIMULATOR_PORT": str(port),
        "SIMULATOR_USERNAME": "",
        "SIMULATOR_PASSWORD": "",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.simulator"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL
    )


async def wait_until_up(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/_simulator/stats") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start at {url}")
            await asyncio.sleep(0.1)


async def set_faults(url: str, **faults: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{url}/_simulator/faults", json=faults) as resp,
    ):
        resp.raise_for_status()


async def list_links(client: ChouetteClient, n: int) -> list[str]:
    links: list[str] = []
    for year in (2021, 2022, 2020):
        for tag in ("vine", "ground", "grass"):
            listing = await client.list_images(tag, dt.date(year, 1, 1), dt.date(year, 12, 31))
            links += [image.url for image in listing.images]
        if len(links) >= n:
            return links[:n]
    raise RuntimeError(f"the simulator lists only {len(links)} images, {n} wanted")


def check(data: bytes) -> str:
    validate_image(data, max_pixels=MAX_PIXELS)
    return hashlib.sha256(data).hexdigest()


async def sequential(links: list[str]) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for link in links:
            async with session.get(link) as resp:
                resp.raise_for_status()
                check(await resp.read())
    return time.perf_counter() - started


async def concurrent(client: ChouetteClient, links: list[str]) -> float:
    async def one(link: str) -> str:
        download = await client.download(link)
        await check_image(download.data, max_pixels=MAX_PIXELS)
        return download.sha256

    started = time.perf_counter()
    digests = await asyncio.gather(*(one(link) for link in links))
    elapsed = time.perf_counter() - started
    assert len(set(digests)) == len(links)
    return elapsed


async def run(n: int, latency: float, concurrency: int) -> dict[str, object]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_simulator(port)
    try:
        await wait_until_up(url)
        settings = Settings(_env_file=None, chouette_api_url=url)  # type: ignore[call-arg]
        fetcher = FetcherSettings(_env_file=None, concurrency=concurrency)  # type: ignore[call-arg]
        async with ChouetteClient.open(settings, fetcher) as client:
            links = await list_links(client, n)
            await concurrent(client, links)  # warm the simulator's image cache and connections
            await set_faults(url, latency=latency)
            baseline = await sequential(links)
            runs = [await concurrent(client, links) for _ in range(3)]
    finally:
        process.terminate()
        process.wait(10)
    fetch = statistics.median(runs)
    ideal = math.ceil(n / concurrency) * latency
    return {
        "images": n,
        "latency_ms": latency * 1000,
        "concurrency": concurrency,
        "baseline_s": baseline,
        "fetch_s": fetch,
        "fetch_runs_s": runs,
        "ideal_s": ideal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight (default: FETCHER_CONCURRENCY, i.e. the service's setting)",
    )
    args = parser.parse_args()
    concurrency = args.concurrency or FetcherSettings().concurrency
    result = runtime.run(run(args.images, args.latency_ms / 1000, concurrency))
    n, baseline, fetch, ideal = (
        result["images"],
        float(result["baseline_s"]),  # type: ignore[arg-type]
        float(result["fetch_s"]),  # type: ignore[arg-type]
        float(result["ideal_s"]),  # type: ignore[arg-type]
    )
    ratio = baseline / fetch
    share = ideal / fetch
    print(
        f"{n} images, {result['latency_ms']:g} ms latency per request, "
        f"concurrency {result['concurrency']}"
    )
    print(f"baseline (sequential loop): {baseline:7.3f} s  {n / baseline:8.1f} images/s")
    runs = ", ".join(f"{r:.3f}" for r in result["fetch_runs_s"])  # type: ignore[attr-defined]
    print(f"fetcher (median of {runs}): {fetch:7.3f} s  {n / fetch:8.1f} images/s")
    print(
        f"latency-bound ideal: {ideal:7.3f} s  {n / ideal:8.1f} images/s; "
        f"fetcher reaches {share:.0%} of it (target {TARGET_IDEAL_SHARE:.0%}: "
        f"{'pass' if share >= TARGET_IDEAL_SHARE else 'FAIL'})"
    )
    print(f"speed-up: {ratio:.1f}x (target {TARGET_RATIO:g}x)")
    print(
        json.dumps(
            {
                "bench": "fetch",
                "ratio": round(ratio, 2),
                "target": TARGET_RATIO,
                "pass": ratio >= TARGET_RATIO,
                "ideal_share": round(share, 3),
                "ideal_share_target": TARGET_IDEAL_SHARE,
                "images_per_s": round(n / fetch, 1),
                "concurrency": result["concurrency"],
            }
        )
    )


if __name__ == "__main__":
    main()
