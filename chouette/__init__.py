"""The ``chouette`` command line: a producer and a window on Postgres, not a service.

    chouette train | evaluate     validate with the message models, record, publish (--wait follows)
    chouette status | watch       request progress from Postgres (watch: LISTEN/NOTIFY)
    chouette models | report      the model registry; curves and confusion matrix as PNG
    chouette predict              class probabilities for local images (loads TensorFlow)
    chouette migrate              apply migrations and set each role's grants (the only DDL)
    chouette services | worker    local RabbitMQ + PostgreSQL; run one service by module name
    chouette weights              pull (verified) and list the ImageNet weights cache

Exit codes: 0 success, 1 failure (the request failed, a server is unreachable),
2 bad input (one line naming the field; nothing is published).

Importing this package stays cheap (no TensorFlow, no matplotlib, no drivers) so that
``chouette --help`` answers at once; each command imports what it needs.
"""

from __future__ import annotations

from chouette.app import main

__all__ = ["main"]
