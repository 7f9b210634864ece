"""The Socket.IO wire format of docs/PROTOCOL.md, in both directions, written once.

The server encodes with it (`server.api`), the remote panel decodes with it (`flowmgr_tui`);
`catalog` names every event. It imports only the core (models, events, errors) and pydantic,
never a transport or a front end, so both sides may import it.
"""
