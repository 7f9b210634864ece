"""The domain core: ContainerManager, event bus, flow channels. No front-end imports."""

__all__: list[str] = []
