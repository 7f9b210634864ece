"""A manager in its own process for the queued-delivery crash test (SIGKILLed by the test).

`python -m tests.integration.queue_child SETTINGS_JSON NAME COUNT`: queues COUNT messages to the
created (not started) flow NAME, printing `queued <n> <message_id>` once each is answered, then
starts the flow and prints `delivered <message_id>` for every `message_delivered`."""

from __future__ import annotations

import asyncio
import sys

from server.core.config import Settings
from server.core.events import QueuedMessageDelivered
from server.core.manager import ContainerManager
from server.wire.journal_encoding import encode_event


def say(line: str) -> None:
    """One line to the test, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(settings_json: str, name: str, count: int) -> None:
    settings = Settings.model_validate_json(settings_json)
    manager = ContainerManager(settings, journal_encoder=encode_event)
    await manager.start()
    async with manager.bus.subscribe() as sub:
        for n in range(count):
            mid = await manager.send_message(name, {"command": "q", "n": n}, queue=True)
            say(f"queued {n} {mid}")
        await manager.start_container(name)
        async for event in sub:
            if isinstance(event, QueuedMessageDelivered):
                say(f"delivered {event.message_id}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
