"""The deployment guide's own commands and files, verbatim, for the tests that run them.

Kept here as text (the guide lives outside the checkout, `../shared/guide/`); when the guide is
found, `test_guide_checkout.py` proves every block below still appears in it character for
character.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "GUIDE_CANDIDATES",
    "guide_path",
    "SOCKET_DIR_STEP",
    "DOCKER_RUN",
    "HEALTH_CHECK",
    "COMPOSE_FILE",
    "COMPOSE_UP",
    "KUBERNETES_FILE",
    "SYSTEMD_UNIT",
    "UVICORN",
    "PIP_INSTALL",
    "TASK_BUILD",
    "TASK_RUN",
]

_ROOT = Path(__file__).resolve().parents[2]
GUIDE_NAME = "flow-manager-deployment-guide.md"
GUIDE_CANDIDATES = [
    Path(os.environ.get("FLOWMGR_GUIDE", "/nonexistent")),
    _ROOT.parent / "shared" / "guide" / GUIDE_NAME,
    _ROOT.parents[1] / "shared" / "guide" / GUIDE_NAME,
    Path("/work/shared/guide") / GUIDE_NAME,  # this machine's copy, for clones made elsewhere
]


def guide_path() -> Path | None:
    """The guide, when this machine has it (FLOWMGR_GUIDE, or ../shared/guide/)."""
    return next((p for p in GUIDE_CANDIDATES if p.is_file()), None)


SOCKET_DIR_STEP = """mkdir -p /tmp/kawaflow/sockets
chmod 777 /tmp/kawaflow/sockets"""

DOCKER_RUN = """docker run -d \\
  --name flow-manager \\
  -p 8000:8000 \\
  -v /var/run/docker.sock:/var/run/docker.sock \\
  -v /tmp/kawaflow/sockets:/tmp/kawaflow/sockets \\
  kawaflow/flow-manager:latest"""

HEALTH_CHECK = "curl http://localhost:8000/health"

COMPOSE_FILE = """version: "3"

services:
  flow-manager:
    image: kawaflow/flow-manager:latest
    ports:
      - "8000:8000"
    volumes:
      - /var/run/docker.sock:/var/run/docker.sock
      - /tmp/kawaflow/sockets:/tmp/kawaflow/sockets
    environment:
      - LOG_LEVEL=INFO
    restart: unless-stopped
"""

COMPOSE_UP = "docker-compose up -d"

KUBERNETES_FILE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: flow-manager
  labels:
    app: flow-manager
spec:
  replicas: 1
  selector:
    matchLabels:
      app: flow-manager
  template:
    metadata:
      labels:
        app: flow-manager
    spec:
      containers:
        - name: flow-manager
          image: kawaflow/flow-manager:latest
          ports:
            - containerPort: 8000
          env:
            - name: LOG_LEVEL
              value: "INFO"
          volumeMounts:
            - name: docker-sock
              mountPath: /var/run/docker.sock
            - name: socket-dir
              mountPath: /tmp/kawaflow/sockets
      volumes:
        - name: docker-sock
          hostPath:
            path: /var/run/docker.sock
        - name: socket-dir
          hostPath:
            path: /tmp/kawaflow/sockets
---
apiVersion: v1
kind: Service
metadata:
  name: flow-manager
spec:
  selector:
    app: flow-manager
  ports:
    - port: 8000
      targetPort: 8000
  type: ClusterIP
"""

SYSTEMD_UNIT = """[Unit]
Description=Flow Manager Service
After=network.target docker.service
Requires=docker.service

[Service]
Type=simple
User=<your_user>
WorkingDirectory=/path/to/flow-manager
ExecStart=/path/to/flow-manager/.venv/bin/uvicorn main:app --host 0.0.0.0 --port 8000
Restart=on-failure
Environment=LOG_LEVEL=INFO
Environment=SOCKET_DIR=/tmp/kawaflow/sockets

[Install]
WantedBy=multi-user.target
"""

UVICORN = "uvicorn main:app --host 0.0.0.0 --port 8000"
PIP_INSTALL = "pip install -r requirements.txt"
TASK_BUILD = "task flow-manager:build"
TASK_RUN = "task flow-manager:run"
