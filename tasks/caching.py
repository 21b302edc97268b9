"""The cache policy of the run's exact fit and training (tasks/publish/reuse.py says when they are reused)."""

from __future__ import annotations


def cache_key(context, parameters: dict) -> str | None:
    """A task's cache key: the task's name and its `key` parameter, the key of the run's fits (None:
    never cached). The key names the data by its content hash and the configuration: no data frame
    is ever hashed."""
    key = parameters.get("key")
    return f"{context.task.name}-{key}" if key else None
