"""The Socket.IO + HTTP front end of the core (FastAPI, python-socketio, uvicorn)."""

from server.api.app import create_app

__all__ = ["create_app"]
