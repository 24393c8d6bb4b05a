"""Weights: list, register from a URL (blocking download), its progress, and cancelling it."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from ..routing import slash_twins
from ..schemas import ModelType, WeightsBody
from ..state import AppState

__all__ = ["router"]

router = APIRouter()
route = slash_twins(router)


@route("GET", "/sam/weights/")
def list_weights(state: AppState, type: Optional[ModelType] = Query(default=None)) -> list[dict[str, str]]:  # noqa: A002
    return state.weights.list(type)


@route("POST", "/sam/weights/", response_class=PlainTextResponse)
def register_weights(state: AppState, body: WeightsBody) -> str:
    return state.weights.register(body.type, body.name, body.url)


@route("GET", "/sam/weights/cancel/", response_class=PlainTextResponse)
def cancel_registration(state: AppState) -> str:
    state.weights.cancel()
    return "Cancel signal sent"


@route("GET", "/sam/progress/")
def progress(state: AppState) -> dict[str, Any]:
    return state.weights.progress()
