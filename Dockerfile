# The flow-manager image: the headless service on port 8000, and `flowmgr` (the panel) on PATH.
#
# With a registry:  docker build --build-arg DOCKER_GID=$(stat -c %g /var/run/docker.sock) -t flowmgr:latest .
# Offline (here):   bash scripts/build-images.sh flowmgr
#   which builds wheels on the host into build/wheels and runs
#   docker build --build-arg BASE_IMAGE=flowmgr-base:bookworm --build-arg OFFLINE_WHEELS=1 ...
# Only the legacy builder's features are used (no heredocs, no --mount), so both builders work.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# Marks the throw-away build stage so scripts/build-images.sh can prune it (and nothing else).
LABEL flowmgr.stage=build
ARG OFFLINE_WHEELS=0
# .dockerignore lets only the package sources and build/wheels in.
COPY . /src/
RUN set -eu; \
    python3 -m venv /opt/flowmgr; \
    if [ "$OFFLINE_WHEELS" = 1 ]; then \
        /opt/flowmgr/bin/pip install --no-cache-dir --disable-pip-version-check \
            --no-index --find-links /src/build/wheels flowmgr; \
    else \
        /opt/flowmgr/bin/pip install --no-cache-dir --disable-pip-version-check /src; \
    fi; \
    /opt/flowmgr/bin/flowmgr --version

FROM ${BASE_IMAGE}
# The gid that owns /var/run/docker.sock on the host: the service user joins that group.
ARG DOCKER_GID=999
ARG FLOWMGR_UID=10001
COPY --from=build /opt/flowmgr /opt/flowmgr
COPY config.json /etc/flowmgr/config.json
# `flowmgr` on PATH: the panel, attached to this container's running service.
COPY deploy/container/flowmgr /usr/local/bin/flowmgr
COPY deploy/container/entrypoint /usr/local/bin/flowmgr-entrypoint
# No useradd in minimal bases: write the account lines directly, and add the user to the group
# of the engine's socket (whatever that gid is named here, or a new "docker-host" group).
RUN set -eu; \
    if ! getent group "$DOCKER_GID" >/dev/null; then \
        echo "docker-host:x:${DOCKER_GID}:" >> /etc/group; \
    fi; \
    sed -i -E "s/^([^:]*:[^:]*:${DOCKER_GID}:)(.+)$/\1\2,flowmgr/; s/^([^:]*:[^:]*:${DOCKER_GID}:)$/\1flowmgr/" /etc/group; \
    if [ "$DOCKER_GID" != "$FLOWMGR_UID" ]; then echo "flowmgr:x:${FLOWMGR_UID}:" >> /etc/group; fi; \
    echo "flowmgr:x:${FLOWMGR_UID}:${FLOWMGR_UID}:flow manager:/home/flowmgr:/bin/sh" >> /etc/passwd; \
    mkdir -p /home/flowmgr /tmp/kawaflow/sockets; \
    chown "${FLOWMGR_UID}:${DOCKER_GID}" /home/flowmgr /tmp/kawaflow/sockets; \
    chmod 2770 /tmp/kawaflow/sockets

ENV PATH=/usr/local/bin:/opt/flowmgr/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONFIG_FILE=/etc/flowmgr/config.json \
    HOME=/home/flowmgr \
    LANG=C.UTF-8
USER flowmgr
WORKDIR /home/flowmgr
EXPOSE 8000
# /health answers 503 while the engine is unreachable; urlopen raises on it, so the check fails.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/local/bin/flowmgr-entrypoint"]
CMD ["/opt/flowmgr/bin/flowmgr", "--server-only"]
