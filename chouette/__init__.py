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

The entry point is ``chouette.entry.main`` (the console script, ``python -m chouette``):
it parses, then imports ``chouette.app`` to run the command. This package imports nothing,
so that a module of it (the parser, the errors) is imported without the rest;
``chouette.app`` imports every command, none of which imports
TensorFlow, matplotlib or Pillow before it runs, so ``chouette --help`` answers at once.
"""
