"""Frames of a sequence uploaded one by one, kept for the video request that names their folder."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile

from ..routing import slash_twins
from ..state import AppState

__all__ = ["router"]

router = APIRouter()
route = slash_twins(router)


@route("POST", "/sam/upload/")
async def upload(state: AppState, dirname: str = Form(...), file: UploadFile = File(...)) -> dict[str, str]:
    data = await file.read()
    state.uploads.add(dirname, file.filename or "", data)
    return {"filename": file.filename or ""}
