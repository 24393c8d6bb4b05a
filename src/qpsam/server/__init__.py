"""A samapi-compatible SAM server: the unmodified QuPath SAM extension (0.9.x) and ``qpsam --server`` use it.

``create_app(settings)`` builds the FastAPI application; ``qpsam serve`` runs it with uvicorn.

Endpoints (all under ``/sam/``; the slash-less forms are accepted too):

============================  =====================================================================
``GET  /sam/version/``        plain text ``0.7.1+qpsam.<version>`` (samapi protocol version + ours)
``GET  /sam/health/``         JSON: server, version, protocol, advertised features (no token needed)
``GET  /sam/weights/?type=``  ``[{"type", "name", "url"}]``, ``default`` first for every type
``POST /sam/weights/``        register weights from a URL (blocks until downloaded), plain-text answer
``GET  /sam/weights/cancel/`` cancel the running registration, plain text
``GET  /sam/progress/``       ``{"message", "percent"}`` of the running registration
``POST /sam/``                box (XYXY) and/or points on a base64 image -> GeoJSON features
``POST /sam/automask/``       automatic mask generation with every generator parameter
``POST /sam/sam3/``           SAM3 text + XYWH boxes (boxes accumulate until ``reset_prompts``)
``POST /sam/upload/``         one frame of a sequence (multipart ``dirname`` + ``file``)
``POST /sam/video/``          SAM2 propagation through uploaded frames (or ``b64imgs``)
``POST /sam/sam3video/``      SAM3 propagation
============================  =====================================================================

Where qpsam differs from samapi 0.7.1 on purpose (each checked against what the extension does):

* Quality: every feature carries its own mask's score (samapi gives mask i the score of mask i-1).
  ``object_idx`` keeps samapi's numbering (-1, 0, 1, ...) because the extension turns it into a class name.
  With the extension's "best quality" output it still keeps the *lowest* score: that is a client bug.
* Geometry: holes and every separate piece are kept (Polygon with holes or MultiPolygon; QuPath's GeoJSON
  reader, which the extension uses, reads both), with integer coordinates on pixel corners: the shape
  lands exactly on the mask's pixels once the extension scales it (samapi's single marching-squares ring
  runs through pixel centres, half a pixel inside).
* Empty masks give no feature (samapi sends an empty polygon).
* Images: grayscale, palette, alpha, 16-bit and float images are accepted and converted to 8-bit RGB
  (samapi answers 500 for grayscale and 16-bit).
* Errors: bad input answers 4xx with ``{"detail": message}``: 422 for malformed JSON, base64, images,
  prompts, unknown weights or out-of-range parameters (also in the video endpoints, where samapi used
  404), 413 for bodies or images over the limits, 401 for a missing or wrong token, 503 when a model
  cannot be loaded here (SAM3 not installed: samapi's ``/sam/sam3/`` gave 500).
* ``checkpoint_url`` must be a default, registered or catalog URL: the server never opens a path or
  fetches an arbitrary URL named in a prediction request. ``POST /sam/weights/`` downloads http(s) only.
* Weights listing never deletes files; files are stored under their registered name, so two URLs with
  the same basename do not collide. Default weights are not loaded at start-up; a model loads on first use.
* ``/sam/progress/`` answers ``{"message": null, "percent": -1}`` before any registration (samapi: 500).
* Automask ``output_type`` is matched case-insensitively, so samapi's own default ``"Single Mask"`` works.
* Uploads: the folder is the hash of ``dirname`` and frames are stored under their parsed frame number;
  client names never become paths (samapi wrote ``../`` names outside its folder).
* Video bodies accept ``checkpointUrl`` (what the extension sends) as well as ``checkpoint_url``.
* The embedding cache is keyed by model, weights and image content and shared by all requests (samapi kept
  one image per worker), inference runs under one lock, and the models load once per process.
* ``b64mask`` is ignored (a mask image cannot stand in for SAM's low-resolution logits).
* Limits (:mod:`.limits`), checked before any work: automask parameters and total work (crops, mask
  decodings), prompt sizes and coordinates, finite numbers only; 422 names the limit. Error answers clip the
  values they quote (:mod:`.echo`); samapi echoed every input in full.
* SIGTERM/SIGINT stop the process within seconds (:mod:`.shutdown`): running model work is stopped or abandoned,
  requests answer 503. samapi (and uvicorn alone) waited for the running request, however long.
* HTTP/2 upgrade offers (``Upgrade: h2c``, sent by the extension's Java client) are answered over HTTP/1.1
  without uvicorn's warnings.
"""

from __future__ import annotations

from .app import create_app
from .routes.info import FEATURES, PROTOCOL_VERSION
from .settings import TOKEN_ENV, Settings

__all__ = ["create_app", "Settings", "TOKEN_ENV", "PROTOCOL_VERSION", "FEATURES"]
