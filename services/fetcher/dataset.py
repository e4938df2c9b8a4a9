"""From a date range to a stored dataset: list, download what is new, validate, store, split.

    list every tag (concurrently) ─▶ links already stored? (image_sources) ─▶ download the rest
    ─▶ validate (Pillow, off the event loop) ─▶ store each image ─▶ manifest + split ─▶ dataset

The dataset is identified by its content: the digest over the sorted ``(sha256, tag)`` list,
with the split's fractions and seed. Building the same content twice gives the same row.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.fetcher import store
from services.fetcher.client import ChouetteClient, ListedImage
from services.fetcher.split import assign_splits, split_counts
from services.fetcher.validation import ImageRejected, check_image
from shared.db import Pool
from shared.errors import PermanentError, PipelineError
from shared.messages import DatasetSpec
from shared.settings import FetcherSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class SplitParams:
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    seed: int = 42


@dataclass
class FetchReport:
    dataset_id: int
    n_images: int
    counts: dict[str, int]
    downloaded: int = 0  # images fetched over the network this time
    reused: int = 0  # links whose image was already stored
    skipped: int = 0  # listing entries without a link
    rejected: Counter[str] = field(default_factory=Counter)
    created: bool = True  # False: the same content was already a dataset


def content_digest(pairs: Iterable[tuple[str, str]]) -> str:
    """sha256 over the sorted ``sha256 tag`` lines: the identity of a dataset's content."""
    lines = sorted(f"{sha} {tag}" for sha, tag in pairs)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _first_error(group: BaseExceptionGroup[Any]) -> BaseException:
    """The most telling error of a group: a permanent one, else a pipeline one, else any."""
    flat: list[BaseException] = []

    def walk(g: BaseExceptionGroup[Any]) -> None:
        for exc in g.exceptions:
            walk(exc) if isinstance(exc, BaseExceptionGroup) else flat.append(exc)

    walk(group)
    for kind in (PermanentError, PipelineError, BaseException):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    return group


async def gather_all(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(c) for c in coros]
    except BaseExceptionGroup as group:
        raise _first_error(group) from None
    return [t.result() for t in tasks]


def _range(spec: DatasetSpec) -> str:
    return f"from {spec.start_date} to {spec.end_date}"


class DatasetBuilder:
    def __init__(self, pool: Pool, client: ChouetteClient, settings: FetcherSettings) -> None:
        self.pool = pool
        self.client = client
        self.settings = settings

    async def build(
        self, spec: DatasetSpec, split: SplitParams, progress: Progress | None = None
    ) -> FetchReport:
        listings = await gather_all(
            self.client.list_images(tag, spec.start_date, spec.end_date) for tag in spec.tags
        )
        empty = [listing.tag for listing in listings if not listing.images]
        if empty:
            names = ", ".join(repr(t) for t in empty)
            raise PermanentError(f"no images tagged {names} {_range(spec)} at {self.client.host}")
        skipped = sum(listing.skipped for listing in listings)

        # One download per distinct link, whatever the number of tags listing it.
        by_key: dict[str, ListedImage] = {}
        for listing in listings:
            for image in listing.images:
                by_key.setdefault(image.source_key, image)
        resolved = await store.known_sources(self.pool, by_key)
        reused = len(resolved)
        rejected_links: dict[str, str] = {}
        total = len(by_key)
        done = reused
        if progress is not None:
            await progress(done, total)

        async def fetch(image: ListedImage) -> None:
            nonlocal done
            try:
                download = await self.client.download(image.url)
                info = await check_image(download.data, max_pixels=self.settings.max_image_pixels)
                await store.save_image(
                    self.pool,
                    sha256=download.sha256,
                    data=download.data,
                    info=info,
                    source_key=image.source_key,
                )
                resolved[image.source_key] = download.sha256
            except ImageRejected as exc:
                logger.warning("rejected %s: %s", image.source_key, exc)
                rejected_links[image.source_key] = exc.reason
            done += 1
            if progress is not None:
                await progress(done, total)

        missing = [image for key, image in by_key.items() if key not in resolved]
        await gather_all(fetch(image) for image in missing)
        rejected: Counter[str] = Counter(rejected_links.values())

        manifest_tags: dict[str, str] = {}
        manifest: list[tuple[str, ListedImage]] = []
        for listing in listings:
            for image in listing.images:
                sha = resolved.get(image.source_key)
                if sha is None:
                    continue
                first_tag = manifest_tags.get(sha)
                if first_tag is None:
                    manifest_tags[sha] = image.tag
                    manifest.append((sha, image))
                elif first_tag != image.tag:  # the same photo under two classes: keep one
                    rejected["listed under two tags"] += 1

        counts: dict[str, int] = dict.fromkeys(spec.tags, 0)
        for _, image in manifest:
            counts[image.tag] += 1
        unusable = [tag for tag, n in counts.items() if n == 0]
        if unusable:
            names = ", ".join(repr(t) for t in unusable)
            why = ", ".join(f"{reason} {n}" for reason, n in rejected.most_common()) or "none"
            raise PermanentError(
                f"no usable images tagged {names} {_range(spec)} at {self.client.host} "
                f"(rejected: {why})"
            )

        pairs = [(sha, image.tag) for sha, image in manifest]
        digest = content_digest(pairs)
        splits = assign_splits(
            pairs,
            test_fraction=split.test_fraction,
            val_fraction=split.val_fraction,
            seed=split.seed,
        )
        report = FetchReport(
            dataset_id=0,
            n_images=len(manifest),
            counts=counts,
            downloaded=len(missing) - len(rejected_links),
            reused=reused,
            skipped=skipped,
            rejected=rejected,
        )
        existing = await store.find_dataset(
            self.pool,
            digest=digest,
            test_fraction=split.test_fraction,
            val_fraction=split.val_fraction,
            seed=split.seed,
        )
        if existing is not None:
            report.dataset_id, report.created = existing, False
            return report
        report.dataset_id = await store.create_dataset(
            self.pool,
            store.DatasetRow(
                start_date=spec.start_date,
                end_date=spec.end_date,
                tags=spec.tags,
                digest=digest,
                test_fraction=split.test_fraction,
                val_fraction=split.val_fraction,
                seed=split.seed,
                counts=counts,
                split_counts=split_counts(splits, dict(pairs)),
                skipped=skipped,
                rejected=dict(rejected),
            ),
            [
                store.ManifestRow(
                    sha256=sha,
                    tag=image.tag,
                    source_url=image.source_key,
                    taken_at=image.taken_at,
                    split=splits[sha],
                )
                for sha, image in manifest
            ],
        )
        return report
