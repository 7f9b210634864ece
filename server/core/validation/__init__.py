"""The one set of create rules (issue 12): every front end runs the same checks.

- `shapes`: each field's shape (name, image, environment, volumes' paths and :ro/:rw, ports,
  command, memory limit); pure, no settings, no disk: the panels run it before sending.
- `environment`: which environment variables a flow may be given (`REFUSED_ENV`).
- `host`: what only the core can check, from its settings and its host's disk (socket path
  length, privileged ports, the bind-root allow-list, the symlink-free walk, protected paths);
  `host.validate_create` runs the shapes first, so its answers are the panels' answers.

This package imports only the shapes eagerly: importing it costs the panel no host code.
"""

from server.core.validation.shapes import (
    FIELDS,
    MAX_NAME_LENGTH,
    check_shapes,
    port_bindings,
    shape_problems,
)

__all__ = ["FIELDS", "MAX_NAME_LENGTH", "check_shapes", "shape_problems", "port_bindings"]
