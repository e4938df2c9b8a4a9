"""The timestamp check: listed photos taken outside the requested range are left out."""

from __future__ import annotations

import datetime as dt

from services.fetcher.client import ChouetteClient, ListedImage, Listing
from services.fetcher.dataset import drop_out_of_range, taken_in_range
from tests.plugins.simulator import SimulatorHandle

START, END = dt.date(2021, 6, 1), dt.date(2021, 6, 7)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def test_the_photos_own_local_date_decides() -> None:
    # Just after midnight in the vineyard: 2021-05-31 in UTC, yet taken on June 1st.
    assert taken_in_range(at("2021-06-01T00:30:00+02:00"), START, END)
    # Late on the last day far west: 2021-06-08 in UTC, yet taken on June 7th.
    assert taken_in_range(at("2021-06-07T23:59:59-05:00"), START, END)
    assert not taken_in_range(at("2021-05-31T23:59:59+02:00"), START, END)
    assert not taken_in_range(at("2021-06-08T00:00:00+02:00"), START, END)
    assert not taken_in_range(at("2020-06-03T10:00:00+02:00"), START, END)  # a year early
    assert taken_in_range(at("2021-06-07T12:00:00"), START, END)  # no offset: as written


def test_a_photo_without_timestamp_is_kept() -> None:
    assert taken_in_range(None, START, END)


def image(tag: str, n: int, taken_at: dt.datetime | None) -> ListedImage:
    url = f"https://example.org/media/{tag}-{n}.jpg"
    return ListedImage(tag, url + "?sig=1", url, taken_at)


def test_drop_out_of_range_keeps_the_listing_shape() -> None:
    inside = at("2021-06-03T10:00:00+02:00")
    outside = at("2020-06-03T10:00:00+02:00")
    vine = Listing("vine", (image("vine", 0, inside), image("vine", 1, outside)), skipped=2)
    grass = Listing("grass", (image("grass", 0, None), image("grass", 1, inside)), skipped=0)
    ground = Listing("ground", (image("ground", 0, outside),), skipped=1)
    kept, dropped = drop_out_of_range([vine, grass, ground], START, END)
    assert [listing.tag for listing in kept] == ["vine", "grass", "ground"]
    assert kept[0] == Listing("vine", (image("vine", 0, inside),), skipped=2)
    assert kept[1] is grass  # nothing left out: the same listing
    assert kept[2] == Listing("ground", (), skipped=1)  # all out: "no usable images" follows
    assert dropped == [image("vine", 1, outside), image("ground", 0, outside)]


async def test_simulator_fault_lists_photos_a_year_early(
    client: ChouetteClient, simulator: SimulatorHandle
) -> None:
    honest = await client.list_images("vine", START, END)
    assert all(taken_in_range(im.taken_at, START, END) for im in honest.images)
    simulator.set_faults(out_of_range_rate=0.4)
    listing = await client.list_images("vine", START, END)
    assert [im.source_key for im in listing.images] == [im.source_key for im in honest.images]
    kept, dropped = drop_out_of_range([listing], START, END)
    assert 0 < len(dropped) < len(listing.images)
    by_key = {im.source_key: im.taken_at for im in honest.images}
    for im in dropped:
        honest_time = by_key[im.source_key]
        assert im.taken_at is not None and honest_time is not None
        assert honest_time - im.taken_at == dt.timedelta(days=365)
    assert len(kept[0].images) + len(dropped) == len(honest.images)
    simulator.set_faults(out_of_range_rate=1.0)
    everything = await client.list_images("vine", START, END)
    assert drop_out_of_range([everything], START, END)[0][0].images == ()
