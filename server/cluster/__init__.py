"""Cluster mode (issue 16, docs/CLUSTER.md): the link between node agents and the hub.

`link_models` is what crosses the link, `hub_link` the hub's Socket.IO namespace `/agent`,
`agent_link` the agent's client, `events` what the hub publishes when a node's link changes.
The core never imports this package; it imports the core, the wire models and socketio.
"""
