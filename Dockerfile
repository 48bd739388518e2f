# cloudvote's images: one Dockerfile, one target per service (DOCK-02).
#
#   docker compose build                                  # all three, tagged by compose.yaml
#   docker build --target vote -t cloudvote-vote:0.1.0 .  # one by hand (needs BuildKit)
#
# Targets: vote, worker and result (the production images; migrate runs from any of them
# with `cloudvote migrate`), and dev (the monolith with code reload, for a bind mount).
# There is deliberately no "# syntax=" line: it would pull a frontend image from a
# registry, and air-gapped builders cannot pull. The built-in frontend has everything used
# here (RUN --mount for secrets and caches).

# The base is a build argument so that a private or air-gapped registry can supply it
# (DOCK-07); scripts/docker-airgap points it at a Debian-built stand-in.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------
# deps: a virtualenv with the locked third-party packages only. It changes when uv.lock
# changes, not when our code does, so code edits rebuild in seconds (DOCK-01).
FROM ${PYTHON_IMAGE} AS deps
ARG UV_VERSION=0.13.9
# Compile bytecode now: the runtime filesystem is read-only, so Python cannot cache it later.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Where TLS is intercepted, the build gets the network's CA bundle as the secret "build_ca"
# (deploy/airgap/compose.build-ca.yaml). A secret is mounted for one RUN only and is never
# written to a layer; without it the base image's own CA store is used.
RUN --mount=type=secret,id=build_ca,target=/run/secrets/build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi; \
    python3 -m venv /opt/uv && /opt/uv/bin/pip install --quiet "uv==${UV_VERSION}"
WORKDIR /src
COPY pyproject.toml uv.lock ./
# --frozen: exactly what uv.lock says (hashes included) or fail. --no-dev --no-default-groups:
# runtime dependencies only, none of the dev or bench groups (pytest, matplotlib, ...).
RUN --mount=type=secret,id=build_ca,target=/run/secrets/build_ca \
    --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --no-install-project --python python3

# ---------------------------------------------------------------------------------------
# builder: our package installed into the same virtualenv as a regular (non-editable) wheel.
FROM deps AS builder
COPY README.md ./
COPY src ./src
RUN --mount=type=secret,id=build_ca,target=/run/secrets/build_ca \
    --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --no-editable --python python3

# ---------------------------------------------------------------------------------------
# runtime: the base plus the virtualenv, nothing else: no uv, no compiler, no source tree.
FROM ${PYTHON_IMAGE} AS runtime
# A fixed UID (not a name) so that volume ownership, Kubernetes' runAsUser and audit logs
# all agree on who this is, whatever the base image's /etc/passwd holds.
RUN groupadd --system --gid 10001 cloudvote \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cloudvote
# Unbuffered output reaches `docker logs` at once; no .pyc writes on a read-only root.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /opt/cloudvote/healthcheck.py
# The process writes only to /tmp (gunicorn heartbeats, Prometheus files), which compose
# and Kubernetes mount as tmpfs, so the root filesystem can be read-only.
WORKDIR /tmp
USER 10001:10001
# Liveness only: whether the process itself works. compose.yaml adds readiness (/readyz).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/opt/cloudvote/healthcheck.py", "/healthz"]
ARG CLOUDVOTE_VERSION=0.1.0
ARG GIT_SHA=unknown
ARG BUILD_DATE=
# Re-declared so the label can name the base; a pre-FROM ARG is only visible to FROM lines.
ARG PYTHON_IMAGE
# OCI labels come last: the revision changes on every commit, and this keeps that change
# from invalidating the cached layers above (DOCK-03).
LABEL org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${CLOUDVOTE_VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# ---------------------------------------------------------------------------------------
# dev: the monolith, restarted whenever a file under /src/src changes. Bind-mount the code:
#   docker build --target dev -t cloudvote-dev .
#   docker run --rm -p 5000:5000 -v "$PWD/src:/src/src:ro" cloudvote-dev
FROM deps AS dev
COPY README.md ./
COPY src ./src
# Editable install: the venv imports /src/src, so a bind mount there replaces the code.
RUN --mount=type=secret,id=build_ca,target=/run/secrets/build_ca \
    --mount=type=cache,target=/root/.cache/uv \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-default-groups --group container-dev \
        --python python3 \
 && groupadd --system --gid 10001 cloudvote \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cloudvote \
 && install -d -o 10001 -g 10001 /data
COPY deploy/docker/healthcheck.py /opt/cloudvote/
# Polling, not inotify: Docker Desktop's bind mounts do not always deliver file events.
ENV WATCHFILES_FORCE_POLLING=true \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PORT=5000 \
    CLOUDVOTE_DATA_DIR=/data
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "/opt/cloudvote/healthcheck.py", "/healthz"]
# 0.0.0.0: inside a container the published port arrives on eth0, not on loopback.
# watchfiles (the container-dev dependency group) restarts the command on a code change.
CMD ["watchfiles", "cloudvote dev --host 0.0.0.0", "/src/src"]

# ---------------------------------------------------------------------------------------
# The three services differ only in command, port and labels. Each is its own image name
# (cloudvote-worker, ...) so that each can be versioned, scanned and rolled out on its own.
FROM runtime AS worker
# The worker's port serves health and metrics only; it takes no traffic.
ENV PORT=8080
EXPOSE 8080
LABEL org.opencontainers.image.title="cloudvote-worker" \
      org.opencontainers.image.description="cloudvote worker: moves votes from the Redis stream into PostgreSQL"
# Exec form: cloudvote is PID 1 and gets SIGTERM itself, so `docker stop` drains cleanly.
CMD ["cloudvote", "worker"]

FROM runtime AS result
ENV PORT=5000
EXPOSE 5000
LABEL org.opencontainers.image.title="cloudvote-result" \
      org.opencontainers.image.description="cloudvote result: live tallies as a page, JSON and server-sent events"
CMD ["cloudvote", "result"]

# vote comes last, so a plain `docker build .` builds the vote image.
FROM runtime AS vote
ENV PORT=5000
EXPOSE 5000
LABEL org.opencontainers.image.title="cloudvote-vote" \
      org.opencontainers.image.description="cloudvote vote: accepts votes and queues them durably in Redis"
CMD ["cloudvote", "vote"]
