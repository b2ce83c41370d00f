# One image for every app service of compose.yaml: the simulator, the Celery workers and
# `dispatcher metrics`.  Build context: the repository root.
#
# It installs exactly as tests/test_install.py does (there is no Docker engine on the project's
# machines, so that test is the evidence for this image): build the wheel with `pip wheel
# --no-deps`, install it alone into a fresh virtualenv with no extras, and run from a folder
# that holds no source.  A dependency missing from pyproject.toml fails that test, not this
# image in production.
FROM python:3.11-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
COPY workers ./workers
RUN pip wheel --no-deps -w /dist .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=wheel /dist /dist
RUN python -m venv /opt/venv && /opt/venv/bin/pip install /dist/*.whl && rm -rf /dist

WORKDIR /app
COPY config ./config

# Celery warns when it runs as root, and nothing here needs privileges.
RUN useradd --system --uid 10001 --home-dir /app dispatcher
USER dispatcher

ENV DISPATCH_CONFIG=/app/config/dispatch.compose.toml

CMD ["dispatcher", "--help"]
