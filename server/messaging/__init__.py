"""The RabbitMQ command/event interface: a front end beside Socket.IO over the same core."""

from server.messaging.interface import RabbitInterface

__all__ = ["RabbitInterface"]
