"""The end-to-end fixture: one pipeline for the session, driven through the CLI.

``pipeline`` (session) is :func:`tests.plugins.pipeline.session_pipeline`: a database and a
broker namespace of its own on the test servers, ``python -m services.simulator|fetcher|
trainer|evaluator`` started and ready, each process (the CLI too) connecting as its own
PostgreSQL role and RabbitMQ user, everything stopped with SIGTERM at the end. When an e2e
test fails, the tail of every log is added to its report (set ``E2E_KEEP_LOGS=1`` to keep
the whole files). ``pipeline.chouette(*argv)`` runs the real console entry point
(``python -m chouette``) in a subprocess with the same environment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.plugins.pipeline import SessionPipeline, session_pipeline
from tests.plugins.roles import Login
from tests.plugins.servers import Servers


@pytest.fixture(scope="session")
def pipeline(servers: Servers, role_logins: dict[str, Login]) -> Iterator[SessionPipeline]:
    with session_pipeline(servers, role_logins) as p:
        yield p
