# One image for every service: `docker run IMAGE fetcher|trainer|evaluator|simulator|api`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependency layer: rebuilt only when pyproject.toml changes, not when the code does.
COPY pyproject.toml README.md ./
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip install . \
    && pip uninstall -y chouette-pipeline

# Code layer.
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps . && useradd --create-home --uid 10001 chouette
# What `GET /version` reports as the commit: `--build-arg GIT_COMMIT=$(git rev-parse HEAD)`.
ARG GIT_COMMIT=
ENV CHOUETTE_GIT_COMMIT=${GIT_COMMIT}

USER chouette
ENTRYPOINT ["chouette", "worker"]
