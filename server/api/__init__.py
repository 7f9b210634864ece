"""The Socket.IO + HTTP front end of the core (FastAPI, python-socketio, uvicorn).

`server.api.app.create_app` builds the service; this package file imports nothing, so importing
one of its modules does not load (and cycle back through) the others.
"""
