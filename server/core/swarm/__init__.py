"""Cluster mode on Docker Swarm (issue 16, docs/CLUSTER.md): one flow = one Swarm service.

- `spec`: the create request -> Engine API ServiceSpec mapping; pure, no docker import.
- `engine`: the async driver of a manager's engine (create, scale, force restart, remove, list
  services with their tasks, nodes); the one module of this package that imports `docker`,
  so it is not imported here.
"""

from server.core.swarm.spec import SOCKET_VOLUME_PREFIX, SwarmNode, service_spec, socket_volume

__all__ = ["SOCKET_VOLUME_PREFIX", "SwarmNode", "service_spec", "socket_volume"]
