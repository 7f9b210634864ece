"""The panel's one copy of container state: fed by core events (local) or the wire (remote).

Screens and widgets render from `PanelState` and keep no rows of their own; `rules` holds the
facts of a snapshot the core enforces, so the remote backend settles its snapshots the same way.
"""

__all__ = ["panel_state", "rules"]
