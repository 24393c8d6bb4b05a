"""Routes registered twice, with and without their final slash (the extension posts to the URL as configured)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from fastapi import APIRouter

__all__ = ["slash_twins"]

Handler = TypeVar("Handler", bound=Callable[..., Any])


def slash_twins(router: APIRouter) -> Callable[..., Callable[[Handler], Handler]]:
    """A decorator factory ``route(method, path, **kw)`` adding ``path`` and its slash-less twin to ``router``."""

    def route(method: str, path: str, **kw: Any) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            router.add_api_route(path, fn, methods=[method], **kw)
            if path.endswith("/") and len(path) > 1:
                router.add_api_route(path.rstrip("/"), fn, methods=[method], include_in_schema=False, **kw)
            return fn

        return deco

    return route
