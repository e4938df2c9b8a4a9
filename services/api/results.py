"""The results page's data, shaped from plain rows (no HTTP, no database): what the page's
JavaScript (``static/page.js``) renders as it is, so that the page does no parsing of its own
and these rules are unit-tested without a browser."""

from __future__ import annotations

from typing import Any

from shared.request_state import FINAL
from shared.text import fraction, printable

Row = dict[str, Any]


def request_json(row: Row) -> Row:
    """One request with its progress as numbers (``progress_done``/``progress_total`` of
    ``'training 2/5'``) as ``done`` 2, ``total`` 5, both null when the stage does not count
    (queued, loading a model). The error and progress texts may quote the Chouette API:
    control characters come escaped."""
    out: Row = dict(row)
    out["request_id"] = str(row["request_id"])
    out["in_flight"] = row["status"] not in FINAL
    parsed = fraction(row)
    out["done"], out["total"] = parsed if parsed else (None, None)
    for key in ("progress", "error"):
        if out.get(key):
            out[key] = printable(out[key])
    return out


def requests_body(rows: list[Row]) -> Row:
    """``{"in_flight": n, "requests": [...]}``, in the order the store gives (in flight
    first); ``rows`` already JSON-ready (dates as text)."""
    requests = [request_json(r) for r in rows]
    return {"in_flight": sum(r["in_flight"] for r in requests), "requests": requests}


def gallery_body(evaluation_id: int, rows: list[Row], limit: int) -> Row:
    """The misclassified images of an evaluation: each with the URL of its Grad-CAM overlay
    and the probabilities rounded for display, the most confident mistake first."""
    return {
        "evaluation_id": evaluation_id,
        "limit": limit,
        "items": [
            {
                "sha256": r["sha256"],
                "true_label": r["true_label"],
                "predicted": r["predicted"],
                "confidence": round(float(r["probabilities"].get(r["predicted"], 0.0)), 3),
                "probabilities": {k: round(float(v), 3) for k, v in r["probabilities"].items()},
                "overlay": f"/evaluations/{evaluation_id}/misclassified/{r['sha256']}.png",
            }
            for r in rows
        ],
    }
