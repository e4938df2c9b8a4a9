"""``python -m services.api`` (``chouette worker api``): the HTTP prediction API.

Serves the champion model (and any trained model by id) on ``API_HOST``:``API_PORT``
(default 127.0.0.1:8000); OpenAPI docs at ``/docs``. Refuses to start beyond loopback
without ``API_TOKEN``. Settings: the shared ones (``DATABASE_URL``, ``LOG_*``) and ``API_*``.
"""

from __future__ import annotations

import sys

from shared import startup

# First: a SIGTERM while the imports below run (seconds) exits cleanly.
startup.exit_on_sigterm()

import uvicorn  # noqa: E402

from services.api.app import create_app  # noqa: E402
from services.api.exposure import exposure_problem  # noqa: E402
from services.api.resources import lifespan  # noqa: E402
from services.api.version import version_info  # noqa: E402
from shared import logs  # noqa: E402
from shared.settings import ApiSettings, Settings  # noqa: E402


def main() -> int:
    settings, api = Settings(), ApiSettings()
    logs.configure(settings.log_level, settings.log_format)
    problem = exposure_problem(api.host, api.token.get_secret_value())
    if problem is not None:
        print(f"api: {problem}", file=sys.stderr)
        return 2
    migrate_url = settings.database_url_for("migrate").get_secret_value()
    resources = lifespan(
        settings.database_url_for("api").get_secret_value(),
        api,
        migrate_url=migrate_url if settings.auto_migrate else None,
    )
    app = create_app(api, resources, version_info())
    config = uvicorn.Config(
        app,
        host=api.host,
        port=api.port,
        log_config=None,  # our logging: one line per request, with its request id
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
