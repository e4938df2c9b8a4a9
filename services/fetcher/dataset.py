"""From a date range to a stored dataset: list, download what is new, validate, store, split.

    list every tag (concurrently) ─▶ leave out photos taken outside the range
    ─▶ links already stored? (image_sources) ─▶ download the rest
    ─▶ validate + perceptual hash (Pillow, off the event loop) ─▶ store each image
    ─▶ manifest ─▶ groups of photos that look alike ─▶ grouped split ─▶ dataset

A listed photo whose own local date (its timestamp in its own offset) is outside
``start_date..end_date`` is left out and counted as rejected ("taken outside the requested
range"); one without a usable timestamp is kept, its time unknown.

The dataset is identified by its content: the digest over the sorted ``(sha256, tag)`` list
and the grouping rule (session gap, hash distance), with the split's fractions and seed.
Building the same content twice gives the same row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.fetcher import store
from services.fetcher.client import ChouetteClient, ListedImage, Listing
from services.fetcher.split import Photo, Split, group_photos, split_counts, split_groups
from services.fetcher.validation import ImageRejected, check_image, perceptual_hash
from shared.db import Pool
from shared.errors import PermanentError, PipelineError
from shared.messages import DatasetSpec
from shared.settings import FetcherSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
Progress = Callable[[int, int], Awaitable[None]]

OUT_OF_RANGE = "taken outside the requested range"
# Stored images whose perceptual hash is computed in one go (images stored before hashes were).
PHASH_BATCH = 64


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
    out_of_range: int = 0  # listing entries taken outside the range (also in ``rejected``)
    n_groups: int | None = None  # groups the split kept together (None: existing dataset)


def content_digest(pairs: Iterable[tuple[str, str]], grouping: str = "") -> str:
    """sha256 over the sorted ``sha256 tag`` lines: the identity of a dataset's content; a
    ``grouping`` rule (see :func:`grouping_rule`) is a last line, as it changes the split."""
    lines = sorted(f"{sha} {tag}" for sha, tag in pairs)
    if grouping:
        lines.append(f"grouping {grouping}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def grouping_rule(settings: FetcherSettings) -> str:
    """The grouping in a few words, for the digest; "" when nothing is grouped (the split
    per image of earlier datasets)."""
    gap, distance = settings.session_gap_seconds, settings.phash_max_distance
    if gap <= 0 and distance < 0:
        return ""
    return f"sessions<{gap:g}s dhash<={distance}"


def taken_in_range(taken_at: dt.datetime | None, start: dt.date, end: dt.date) -> bool:
    """Whether a photo was taken from ``start`` to ``end`` (inclusive) by its own local date
    (the timestamp in its own offset). A photo without a timestamp is kept: True."""
    return taken_at is None or start <= taken_at.date() <= end


def drop_out_of_range(
    listings: Iterable[Listing], start: dt.date, end: dt.date
) -> tuple[list[Listing], list[ListedImage]]:
    """The listings without the photos taken outside ``start..end``, and those photos."""
    kept: list[Listing] = []
    dropped: list[ListedImage] = []
    for listing in listings:
        inside: list[ListedImage] = []
        for image in listing.images:
            (inside if taken_in_range(image.taken_at, start, end) else dropped).append(image)
        if len(inside) < len(listing.images):
            listing = Listing(listing.tag, tuple(inside), listing.skipped)
        kept.append(listing)
    return kept, dropped


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


def held_downloads(concurrency: int) -> int:
    """The most downloaded images a build holds at once: twice the requests in flight, so
    the next downloads overlap the validation and storing of the last ones."""
    return 2 * max(1, concurrency)


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
        listings, outside = drop_out_of_range(listings, spec.start_date, spec.end_date)
        if outside:
            first = outside[0]
            logger.warning(
                "%d listed photo(s) taken outside %s..%s left out, e.g. %s taken %s",
                len(outside),
                spec.start_date,
                spec.end_date,
                first.source_key,
                first.taken_at.isoformat() if first.taken_at else "?",
            )

        # One download per distinct link, whatever the number of tags listing it.
        by_key: dict[str, ListedImage] = {}
        for listing in listings:
            for image in listing.images:
                by_key.setdefault(image.source_key, image)
        cap = self.settings.max_dataset_images
        if len(by_key) > cap:
            raise PermanentError(
                f"{len(by_key)} images listed {_range(spec)}, above FETCHER_MAX_DATASET_IMAGES"
                f" ({cap}): narrow the date range or the tags, or raise the setting"
            )
        resolved = await store.known_sources(self.pool, by_key)
        reused = len(resolved)
        rejected_links: dict[str, str] = {}
        phashes: dict[str, int | None] = {}  # from this build's validation
        total = len(by_key)
        done = reused
        if progress is not None:
            await progress(done, total)

        # Downloaded images held at once (waiting for validation or for the database): the
        # client bounds requests in flight, this bounds what they leave behind, whatever the
        # number of images (a slow database would otherwise buffer the whole dataset).
        held = asyncio.Semaphore(held_downloads(self.settings.concurrency))

        async def fetch(image: ListedImage) -> None:
            nonlocal done
            try:
                async with held:
                    download = await self.client.download(image.url)
                    info = await check_image(
                        download.data, max_pixels=self.settings.max_image_pixels
                    )
                    await store.save_image(
                        self.pool,
                        sha256=download.sha256,
                        data=download.data,
                        info=info,
                        source_key=image.source_key,
                    )
                resolved[image.source_key] = download.sha256
                phashes[download.sha256] = info.phash
            except ImageRejected as exc:
                logger.warning("rejected %s: %s", image.source_key, exc)
                rejected_links[image.source_key] = exc.reason
            done += 1
            if progress is not None:
                await progress(done, total)

        missing = [image for key, image in by_key.items() if key not in resolved]
        await gather_all(fetch(image) for image in missing)
        rejected: Counter[str] = Counter(rejected_links.values())
        if outside:
            rejected[OUT_OF_RANGE] = len(outside)

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
        digest = content_digest(pairs, grouping_rule(self.settings))
        report = FetchReport(
            dataset_id=0,
            n_images=len(manifest),
            counts=counts,
            downloaded=len(missing) - len(rejected_links),
            reused=reused,
            skipped=skipped,
            rejected=rejected,
            out_of_range=len(outside),
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

        phashes = await self._phashes([sha for sha, _ in manifest], phashes)
        photos = [
            Photo(sha, image.tag, image.taken_at, phashes.get(sha)) for sha, image in manifest
        ]

        def grouped_split() -> tuple[dict[str, Split], int]:
            groups = group_photos(
                photos,
                session_gap=self.settings.session_gap_seconds,
                max_distance=self.settings.phash_max_distance,
            )
            result = split_groups(
                pairs,
                test_fraction=split.test_fraction,
                val_fraction=split.val_fraction,
                seed=split.seed,
                groups=groups,
            )
            return dict(result.splits), result.n_groups

        # Sorting and comparing a few thousand hashes: off the event loop.
        splits, report.n_groups = await asyncio.to_thread(grouped_split)
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
                n_groups=report.n_groups,
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

    async def _phashes(
        self, shas: list[str], known: dict[str, int | None]
    ) -> dict[str, int | None]:
        """The perceptual hash of each image: from this build's validation, else stored, else
        computed now from the stored bytes (images stored before hashes were) and stored."""
        phashes = dict(known)
        rest = [sha for sha in shas if sha not in phashes]
        phashes.update(await store.image_phashes(self.pool, rest))
        missing = [sha for sha in rest if phashes.get(sha) is None]
        if missing:
            logger.info("computing the perceptual hash of %d stored image(s)", len(missing))
        max_pixels = self.settings.max_image_pixels
        for start in range(0, len(missing), PHASH_BATCH):
            blobs = await store.image_bytes(self.pool, missing[start : start + PHASH_BATCH])

            def compute(blobs: dict[str, bytes] = blobs) -> dict[str, int | None]:
                return {
                    sha: perceptual_hash(data, max_pixels=max_pixels) for sha, data in blobs.items()
                }

            computed = await asyncio.to_thread(compute)
            phashes.update(computed)
            await store.set_phashes(
                self.pool, {sha: h for sha, h in computed.items() if h is not None}
            )
        return phashes
