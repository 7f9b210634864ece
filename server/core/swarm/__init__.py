"""Cluster mode on Docker Swarm (issue 16, docs/CLUSTER.md): one flow = one Swarm service.

- `spec`: the create request -> Engine API ServiceSpec mapping; pure, no docker import.
- `engine`: the async driver of a manager's engine (create, scale, force restart, remove, list
  services with their tasks, nodes); the one module of this package that imports `docker`,
  so it is not imported here.
"""

from server.core.swarm.spec import SERVICE_ID_PLACEHOLDER, SwarmNode, service_spec

__all__ = ["SERVICE_ID_PLACEHOLDER", "SwarmNode", "service_spec"]
