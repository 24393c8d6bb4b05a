"""Groovy scripts that replay qpsam runs in QuPath, and the standalone GeoJSON import scripts.

A run is described by a frozen spec (:mod:`.specs`: :class:`DetectionSpec`, :class:`AutomaskSpec`,
:class:`SequenceSpec`) and turned into a script that drives qupath-extension-sam 0.9's task builders
(:mod:`.scripts`). The import scripts are files whose marked values :mod:`.templates` fills in. Every value is
written as a Groovy literal by :mod:`.literals`, so a script is plain ASCII, whatever the locale setting.
"""

from __future__ import annotations

from .literals import boolean, integer, number, string
from .scripts import automask_script, detection_script, script_for, sequence_script, write_script
from .specs import (
    DEFAULT_SERVER_URL,
    AutomaskSpec,
    DetectionSpec,
    SequenceSpec,
    Spec,
    VideoPrompt,
    describe,
    job_kind,
    objects_from_prompts,
)
from .templates import TEMPLATES, fill_template, import_script, project_import_script, template_path, template_text

__all__ = [
    "DEFAULT_SERVER_URL",
    "DetectionSpec",
    "AutomaskSpec",
    "SequenceSpec",
    "VideoPrompt",
    "Spec",
    "detection_script",
    "automask_script",
    "sequence_script",
    "script_for",
    "describe",
    "job_kind",
    "objects_from_prompts",
    "import_script",
    "project_import_script",
    "fill_template",
    "write_script",
    "template_text",
    "template_path",
    "TEMPLATES",
    "number",
    "integer",
    "string",
    "boolean",
]
