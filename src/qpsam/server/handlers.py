"""Exceptions as JSON answers ``{"detail": message}`` with the status the samapi protocol expects."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..errors import FileWriteError, QpsamError, WeightsError
from .echo import clip_detail, validation_detail
from .host import ModelUnavailable
from .images import ImageTooLarge
from .shutdown import ServerStopping
from .weights_api import CheckpointRejected

__all__ = ["install_handlers", "STATUS"]

log = logging.getLogger("qpsam.server")

# The status of each error class; a subclass not listed takes its nearest listed base class's.
STATUS: dict[type[Exception], int] = {
    ImageTooLarge: 413,
    ServerStopping: 503,
    ModelUnavailable: 503,
    CheckpointRejected: 422,
    FileWriteError: 500,  # the server's own disk failed (full, read only): not the request's fault
    # BadImage, BadUpload, PromptError, GeometryError and engine-side ModelError on the request's values.
    QpsamError: 422,
}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": clip_detail(detail)}, status_code=status)


async def _listed(_: Request, exc: Exception) -> JSONResponse:
    status = next(STATUS[cls] for cls in type(exc).__mro__ if cls in STATUS)
    return _error(status, str(exc))


async def _weights_failed(_: Request, exc: Exception) -> JSONResponse:
    return _error(502 if "download" in str(exc) else 422, str(exc))


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own answer repeats every input in full: a 1 MB string gave a 1 MB answer.
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)


async def _internal(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return _error(500, f"internal server error: {type(exc).__name__}: {exc}")


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as JSON: :data:`STATUS`, then weights (502 for a failed download), request
    validation (422, inputs clipped) and anything else (500)."""
    for cls in STATUS:
        app.add_exception_handler(cls, _listed)
    # Starlette picks the handler of the nearest class in the error's MRO, so CheckpointRejected keeps its own.
    app.add_exception_handler(WeightsError, _weights_failed)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _internal)
