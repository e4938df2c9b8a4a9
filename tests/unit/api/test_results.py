"""The results page's data shaping (``services.api.results``) and figures, without servers."""

from __future__ import annotations

import re

from services.api import figures, results


def _request(status: str, progress: str | None, error: str | None = None) -> dict:
    """A ``request_progress`` row, its numbers as ``shared.db.set_progress`` writes them."""
    numbers = re.search(r"(\d+)/(\d+)", progress or "")
    return {"request_id": "66e997ef-0000", "kind": "training", "status": status,
            "stage": "training", "progress": progress, "error": error,
            "progress_done": int(numbers[1]) if numbers else None,
            "progress_total": int(numbers[2]) if numbers else None}  # fmt: skip


def test_progress_becomes_numbers() -> None:
    r = results.request_json(_request("running", "training 2/5"))
    assert (r["done"], r["total"], r["in_flight"]) == (2, 5, True)
    assert r["progress"] == "training 2/5"


def test_no_fraction_no_numbers() -> None:
    r = results.request_json(_request("queued", None))
    assert (r["done"], r["total"], r["in_flight"]) == (None, None, True)
    done = results.request_json(_request("succeeded", "done"))
    assert (done["done"], done["in_flight"]) == (None, False)


def test_quoted_control_characters_come_escaped() -> None:
    r = results.request_json(_request("failed", "fetching 1/2", "API said \x1b[31mno"))
    assert "\x1b" not in r["error"] and "\\x1b" in r["error"]


def test_requests_body_counts_those_in_flight() -> None:
    rows = [_request("running", "fetching 3/9"), _request("queued", None),
            _request("failed", None, "boom")]  # fmt: skip
    body = results.requests_body(rows)
    assert body["in_flight"] == 2 and len(body["requests"]) == 3


def test_gallery_items_name_their_overlay_and_confidence() -> None:
    sha = "a" * 64
    body = results.gallery_body(
        7, [{"sha256": sha, "true_label": "vine", "predicted": "grass",
             "probabilities": {"vine": 0.1, "ground": 0.05, "grass": 0.85123}}], 24,
    )  # fmt: skip
    (item,) = body["items"]
    assert item["overlay"] == f"/evaluations/7/misclassified/{sha}.png"
    assert item["confidence"] == 0.851
    assert body["limit"] == 24 and body["evaluation_id"] == 7


def test_figures_are_png_bytes() -> None:
    epochs = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "val_loss": None,
               "val_accuracy": 0.4} for e in (1, 2)]  # fmt: skip
    curves = figures.curves_png({"model_id": 3, "architecture": "ResNet50"}, epochs)
    matrix = figures.confusion_png({"model_id": 3, "dataset_id": 1, "split": "test",
                                    "confusion_matrix": [[2, 0], [1, 1]],
                                    "class_names": ["vine", "grass"]})  # fmt: skip
    for png in (curves, matrix):
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_png_cache_keeps_the_most_recently_used_within_its_bytes() -> None:
    cache = figures.PngCache(max_bytes=10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # now the most recent
    cache.put("c", b"cccc")  # 12 bytes: the least recently used ("b") goes
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    cache.put("a", b"aa")  # replacing counts the new size only
    cache.put("d", b"dddd")
    assert ("a" in cache, "c" in cache, "d" in cache) == (True, True, True)
    cache.put("huge", b"x" * 11)  # larger than the whole cache: not kept, nothing dropped
    assert "huge" not in cache and cache.get("a") == b"aa"
