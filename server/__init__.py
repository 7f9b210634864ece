"""flowmgr service: the core (server.core) and its Socket.IO/HTTP front end (server.api)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
