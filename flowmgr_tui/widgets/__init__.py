"""The panel's widgets, one per module."""

__all__ = [
    "activity_list",
    "container_table",
    "docker_banner",
    "log_pane",
    "message_pane",
    "resource_graph",
]
