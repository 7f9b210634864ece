"""The panel's screens, one per module."""

__all__ = ["confirm", "container_detail", "create_form", "dashboard", "help", "path_prompt"]
