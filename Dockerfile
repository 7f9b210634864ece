# The flow-manager image: the headless service on port 8000, and `flowmgr` (the panel) on PATH.
#
# With a registry:  docker build -t kawaflow/flow-manager:latest -t flowmgr:latest .
# Offline (here):   bash scripts/build-images.sh flowmgr    (both tags too)
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
ARG FLOWMGR_UID=10001
COPY --from=build /opt/flowmgr /opt/flowmgr
COPY config.json /etc/flowmgr/config.json
# `flowmgr` on PATH: the panel, attached to this container's running service.
COPY deploy/container/flowmgr /usr/local/bin/flowmgr
COPY deploy/container/entrypoint /usr/local/bin/flowmgr-entrypoint
# No useradd in minimal bases: write the account lines directly. No docker group here: the gid of
# the mounted docker.sock is only known at run time, when the entry point joins it.
RUN set -eu; \
    echo "flowmgr:x:${FLOWMGR_UID}:" >> /etc/group; \
    echo "flowmgr:x:${FLOWMGR_UID}:${FLOWMGR_UID}:flow manager:/home/flowmgr:/bin/sh" >> /etc/passwd; \
    mkdir -p /home/flowmgr /tmp/kawaflow/sockets; \
    chown "${FLOWMGR_UID}:${FLOWMGR_UID}" /home/flowmgr /tmp/kawaflow/sockets; \
    chmod 0700 /tmp/kawaflow/sockets

ENV PATH=/usr/local/bin:/opt/flowmgr/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONFIG_FILE=/etc/flowmgr/config.json \
    HOME=/home/flowmgr \
    LANG=C.UTF-8
# No USER: the entry point starts as root only to join the socket's group, then runs everything
# (the service, `docker exec ... flowmgr`) as flowmgr; see server/container_entry.py.
WORKDIR /home/flowmgr
EXPOSE 8000
# /health answers 503 while the engine is unreachable; urlopen raises on it, so the check fails.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/local/bin/flowmgr-entrypoint"]
CMD ["/opt/flowmgr/bin/flowmgr", "--server-only"]
