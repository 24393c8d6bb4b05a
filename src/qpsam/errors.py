"""One exception hierarchy: every message names the file, image, object or parameter at fault."""

from __future__ import annotations


class QpsamError(Exception):
    """Base class of every error qpsam raises on purpose."""


class GeoJSONError(QpsamError, ValueError):
    """QuPath GeoJSON that cannot be turned into objects (names the feature index)."""


class GeometryError(QpsamError, ValueError):
    """A mask, region or geometry that cannot be converted."""


class PromptError(QpsamError, ValueError):
    """Prompt objects that cannot be turned into SAM prompts."""


class ProjectError(QpsamError):
    """A QuPath project, entry or data file that cannot be read or written."""


class ImageReadError(ProjectError):
    """Pixels of an image entry that cannot be read (missing file, bad region)."""


class ModelError(QpsamError):
    """A model type, weights file or engine that cannot be used."""


class WeightsError(ModelError):
    """A weights file that is missing, truncated, corrupt or fails its checksum."""


class ServerError(QpsamError):
    """A samapi-compatible server that answered badly or not at all.

    ``status`` is the HTTP status of the server's answer (200 for an answer that could not be read), None when
    there was no answer: callers branch on it instead of parsing the message.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[ServerError], tuple[str, int | None]]:
        # Keep the status when the error crosses processes (Dask workers send exceptions pickled).
        return (type(self), (str(self), self.status))


class ScriptError(QpsamError, ValueError):
    """Values that cannot be written into a Groovy script."""


class JobError(QpsamError):
    """A job (detect, automask, track) that failed for an image."""


class LiveError(QpsamError):
    """A running QuPath that cannot be reached, refuses the token, went away, or has no image or selection."""


class FileWriteError(ProjectError, OSError):
    """A file that could not be written safely (full disk, read-only folder); the previous version is unchanged."""


class FileLockedError(ProjectError):
    """A project (or other file) that another live process holds open for writing."""


class DataWarning(UserWarning):
    """Data that was read but holds values its image cannot have (a damaged file); writing it is refused."""
