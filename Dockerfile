# One image for every service: `docker run IMAGE fetcher|trainer|evaluator|simulator|api`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependency layer: the locked versions and files (sha256-checked, requirements.lock from
# `make lock`), rebuilt only when the lock changes, not when the code does.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Code layer: the project alone, nothing more resolved.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
# The `chouette` command (the image runs `chouette worker` and `chouette migrate`) and the
# local tooling its `services` command drives.
COPY chouette ./chouette
COPY localstack ./localstack
RUN pip install --no-deps . && useradd --create-home --uid 10001 chouette
# What `GET /version` reports as the commit: `--build-arg GIT_COMMIT=$(git rev-parse HEAD)`.
ARG GIT_COMMIT=
ENV CHOUETTE_GIT_COMMIT=${GIT_COMMIT}

USER chouette
ENTRYPOINT ["chouette", "worker"]
