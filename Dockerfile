# One image for every app service of compose.yaml: the simulator, the Celery workers and
# `dispatcher metrics`.  Build context: the repository root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
COPY workers ./workers
RUN pip install .

COPY config ./config

# Celery warns when it runs as root, and nothing here needs privileges.
RUN useradd --system --uid 10001 --home-dir /app dispatcher
USER dispatcher

ENV DISPATCH_CONFIG=/app/config/dispatch.compose.toml

CMD ["dispatcher", "--help"]
