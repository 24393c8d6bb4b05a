"""The paquo backend (placeholder until written)."""

from __future__ import annotations


def available() -> bool:
    return False


def unavailable_reason() -> str:
    return "not implemented yet"
