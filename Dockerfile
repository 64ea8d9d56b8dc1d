# One image for the three clinicflow services; the command picks the service:
#   python -m services.intake | services.scheduler | services.notifier
# deploy/docker-compose.yml builds it as clinicflow:local and sets the command per service.
FROM python:3.11.13-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from the runtime lock (exact versions, hashes checked): this layer is
# rebuilt only when the lock changes, not on every code change. Dev extras are never installed.
COPY requirements/runtime.lock requirements/runtime.lock
RUN pip install --require-hashes --requirement requirements/runtime.lock

# Then the project itself (its dependencies are already in place).
COPY README.md ./
COPY shared/ shared/
COPY services/ services/
COPY scripts/ scripts/
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info

# Run as an unprivileged user; the source stays root-owned and read-only to it.
RUN groupadd --system --gid 10001 clinicflow \
    && useradd --system --uid 10001 --gid clinicflow --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin clinicflow
USER 10001:10001

# intake 8001, scheduler 8002, notifier 8003 (CLINICFLOW_HTTP_HOST=0.0.0.0 in a container).
EXPOSE 8001 8002 8003

CMD ["python", "-m", "services.intake"]
