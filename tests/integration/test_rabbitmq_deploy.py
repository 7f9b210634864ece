"""The compose overlay with RabbitMQ beside the manager, and the broker script's contract."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_the_rabbitmq_overlay_puts_a_broker_beside_the_manager() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "FLOW_MANAGER_"))}
    out = subprocess.run(
        ["docker-compose", "-f", str(DEPLOY / "docker-compose.yml")]
        + ["-f", str(DEPLOY / "docker-compose.rabbitmq.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    broker, manager = services["rabbitmq"], services["flow-manager"]
    assert "ports" not in broker  # the compose network only
    assert broker["volumes"][0].startswith("rabbitmq-data:/var/lib/rabbitmq")
    env_m = manager["environment"]
    assert env_m["MESSAGING_BACKEND"] == "rabbitmq"
    assert env_m["RABBITMQ_URL"] == "amqp://flowmgr:change-me@rabbitmq:5672/"
    assert env_m["FLOW_MANAGER_COMMAND_QUEUE"] == "flow-manager.commands"
    assert "rabbitmq" in manager["depends_on"]
    # the base file's promises still hold on the merged service
    assert manager["pid"] == "host" and manager["ports"][0].startswith("127.0.0.1:8000:8000")


def test_the_broker_script_binds_to_loopback_and_starts_only_when_none_answers() -> None:
    text = (ROOT / "scripts" / "ensure-rabbitmq.sh").read_text()
    assert "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" in text and "ERL_EPMD_ADDRESS=127.0.0.1" in text
    assert "if broker_answers; then" in text
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'ensure-rabbitmq.sh "${FLOWMGR_RABBITMQ_PIDFILE:-}"' in setup
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'FLOWMGR_RABBITMQ_PIDFILE="$RABBITMQ_PIDFILE"' in ci and "stop_our_rabbitmq" in ci
