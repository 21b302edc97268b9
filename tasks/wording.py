"""Wording shared by messages, logs and summaries (no imports: every module may use it)."""

from __future__ import annotations


def counted(n: int, word: str) -> str:
    """"1 epoch", "2 epochs", "0 rows"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
