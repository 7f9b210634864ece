"""flowmgr's terminal control panel (Textual)."""

__all__: list[str] = []
