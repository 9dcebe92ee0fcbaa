"""Offline probing: no Lightning import."""

__all__: list[str] = []
