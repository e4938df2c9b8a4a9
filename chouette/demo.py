"""``chouette demo`` (what ``make demo`` runs): from nothing to a result table.

1. local RabbitMQ + PostgreSQL (``localstack.servers``), unless already healthy;
2. the simulator (unless real API credentials are configured) serving the real field
   photos of ``data/field-tiles`` (``--photos DIR`` for another folder, ``--generated``
   for the generated field dataset), and the three services, as subprocesses with their
   logs under ``.chouette/demo-logs/``;
3. ResNet50V2 trained on the first season at 64 px for a few epochs (``--wait`` bars);
4. the model evaluated on the next season (the leak-free check);
5. the result table, then everything it started is stopped again.

Dates default to the simulator's seasons; with real credentials pass dates that exist in
your account (``--train-start`` ... ``--eval-end``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from chouette import queries, render
from chouette.commands import follow_request, record_and_publish
from chouette.connections import open_pool, open_publisher
from chouette.errors import FAILED, OK, CommandFailed
from chouette.follow import Listener
from chouette.submit import evaluation_request, training_request
from localstack import servers
from localstack.processes import SERVICES, Stack, pipeline_env
from shared.messages import EvaluationRequested, TrainingRequested
from shared.settings import Settings

# With photos: the simulator's first season for training, the next for the later range
# (services/simulator/photos.py SEASONS). Generated: two months, then the next two.
PHOTO_TRAIN, PHOTO_EVAL = ("2023-04-01", "2023-09-30"), ("2024-04-01", "2024-09-30")
GENERATED_TRAIN, GENERATED_EVAL = ("2021-04-01", "2021-05-31"), ("2021-06-01", "2021-07-31")


def run_demo(args: argparse.Namespace) -> int:
    settings = Settings()
    real_api = settings.has_api_credentials
    photos = None if real_api or args.generated else args.photos.resolve()
    if photos is not None and not photos.is_dir():
        raise CommandFailed(f"--photos: {photos} is not a folder of <tag>/*.jpg photos")
    _default_dates(args, photos is not None)
    training, evaluation = _messages(args)  # bad input: exit 2 before starting anything
    t0 = time.monotonic()
    started_servers = False
    if not all(servers.status(settings).values()):
        _say("starting local RabbitMQ and PostgreSQL (.chouette/)")
        try:
            servers.up(settings)
        except Exception as exc:
            raise CommandFailed(f"cannot start local services: {exc}") from None
        started_servers = True
    env = pipeline_env(
        amqp_url=settings.amqp_url.get_secret_value(),
        database_url=settings.database_url.get_secret_value(),
        namespace=settings.broker_namespace,
        simulator_port=None if real_api else servers.free_port(),
    )
    if real_api:  # the services get the API the demo found, wherever its .env was read from
        env.update(
            {
                "CHOUETTE_API_URL": settings.chouette_api_url,
                "CHOUETTE_USERNAME": settings.chouette_username,
                "CHOUETTE_PASSWORD": settings.chouette_password.get_secret_value(),
                "CHOUETTE_AUTH": settings.chouette_auth,
            }
        )
    if photos is not None:
        env["SIMULATOR_PHOTOS_DIR"] = str(photos)
    stack = Stack(env, settings.chouette_home.resolve() / "demo-logs")
    names = SERVICES if real_api else ("simulator", *SERVICES)
    api = (
        f"real API at {settings.chouette_api_url}"
        if real_api
        else f"simulated API serving the photos of {photos}"
        if photos is not None
        else "simulated API, generated photos"
    )
    _say(f"starting {', '.join(names)} ({api}; logs in {stack.logdir})")
    try:
        stack.start(names)
        stack.wait_ready()
        _say(f"ready after {time.monotonic() - t0:.0f}s")
        code = asyncio.run(_train_and_evaluate(settings, training, evaluation))
    except Exception:
        if stack.processes:
            print(stack.log_tails(30), file=sys.stderr)
        raise
    finally:
        _say("stopping the services")
        stack.stop()
        if started_servers and not args.keep_services:
            _say("stopping local RabbitMQ and PostgreSQL")
            servers.down(settings)
    _say(f"demo finished in {time.monotonic() - t0:.0f}s")
    return code


def _default_dates(args: argparse.Namespace, photos: bool) -> None:
    """Dates not given: the seasons of the photo folder, or of the generated dataset."""
    train, later = (PHOTO_TRAIN, PHOTO_EVAL) if photos else (GENERATED_TRAIN, GENERATED_EVAL)
    for name, value in zip(
        ("train_start", "train_end", "eval_start", "eval_end"), (*train, *later), strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, value)


def _messages(args: argparse.Namespace) -> tuple[TrainingRequested, argparse.Namespace]:
    """The training request, and the evaluation's fields (its model is not known yet),
    built with the same functions as ``chouette train`` / ``evaluate`` from the demo's
    flags: bad dates or architecture stop the demo here (exit 2)."""
    training = training_request(
        argparse.Namespace(
            start_date=args.train_start,
            end_date=args.train_end,
            tags=None,
            arch=args.arch,
            image_size=args.image_size,
            epochs=args.epochs,
        )
    )
    evaluation = argparse.Namespace(
        model="1", start_date=args.eval_start, end_date=args.eval_end, tags=None
    )
    evaluation_request(evaluation)  # the later range's dates, checked before anything starts
    return training, evaluation


async def _train_and_evaluate(
    settings: Settings, training: TrainingRequested, args: argparse.Namespace
) -> int:
    """Train, then evaluate on the later range (``args``: the evaluation's fields)."""
    async with (
        open_pool(settings, writes=True) as pool,
        open_publisher(settings) as publisher,
        pool.acquire() as con,
        Listener(con) as listener,
    ):

        async def run_request(message: Any, timeout_s: float) -> tuple[Any, Any] | None:
            """Publish, follow with bars; (request row, evaluation), or None if it failed."""
            await record_and_publish(pool, publisher, message)
            req, ev, _ = await follow_request(
                listener, message.request_id, render.ProgressView(), timeout_s
            )
            if req["status"] != "succeeded":
                print(render.request_text(req, ev))
                return None
            return req, ev

        spec = training.training
        _say(
            f"training {spec.architecture} on {training.dataset.start_date}.."
            f"{training.dataset.end_date} at {spec.image_size} px for {spec.epochs} epochs"
            f" (request {training.request_id})"
        )
        done = await run_request(training, 1800)
        if done is None:
            return FAILED
        req, held_out = done
        model_id = req["model_id"]
        args.model = str(model_id)
        model = await queries.model(pool, model_id)
        assert model is not None
        evaluation: EvaluationRequested = evaluation_request(args, tuple(model["class_names"]))
        _say(
            f"evaluating model {model_id} on the later range {args.start_date}..{args.end_date}"
            f" (request {evaluation.request_id})"
        )
        done = await run_request(evaluation, 900)
        if done is None:
            return FAILED
        _, later = done
        print()
        print(result_table(model, [held_out, later]))
        for ev in (held_out, later):
            if ev is not None:
                print()
                print(render.evaluation_text(ev))
        print()
        print(render.registry_table(await queries.registry(pool, 10)))
    return OK


def result_table(model: dict[str, Any] | None, evaluations: list[dict[str, Any] | None]) -> str:
    assert model is not None
    rows = []
    for ev in evaluations:
        if ev is None:
            continue
        label = "held-out test split" if ev["split"] == "test" else "later date range"
        rows.append(
            (
                model["model_id"],
                model["architecture"],
                label,
                ev["dataset_id"],
                ev["n_images"],
                ev["accuracy"],
                ev["macro_f1"],
                ev.get("balanced_accuracy"),
            )
        )
    return render.table(
        rows,
        (
            "model",
            "network",
            "evaluated on",
            "dataset",
            "images",
            "accuracy",
            "macro_f1",
            "bal_acc",
        ),
    )


def _say(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)
