"""Placeholder: the reason classifier (issue 7) replaces this module."""

from __future__ import annotations


def classify(code: str | None, enhanced: str | None, text: str | None) -> str:
    """Return the reason category of a non-delivery reply ("other" until rules exist)."""
    if code is None:
        return "connection"
    return "other"
