"""glip: GLIP and GLIPv2 grounded language-image models in pure PyTorch.

Public API re-exports only; see the README for usage. The names are imported lazily (on first
use), so ``import glip`` and ``glip --help`` do not load torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from glip.errors import CheckpointError, ConfigError, DataError, GLIPError, ImageError, OutputError, PromptError
from glip.version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel, GLIPOutput
    from glip.predictor import GLIPPredictor
    from glip.processing import GLIPInputs, GLIPProcessor, load_image
    from glip.structures import Detections, EntityMap
    from glip.text import Prompt, caption_prompt, detection_prompt

# public name -> module that defines it
_LAZY = {
    "GLIPConfig": "glip.config",
    "GLIPModel": "glip.modeling.glip",
    "GLIPOutput": "glip.modeling.glip",
    "GLIPPredictor": "glip.predictor",
    "GLIPInputs": "glip.processing",
    "GLIPProcessor": "glip.processing",
    "load_image": "glip.processing",
    "Detections": "glip.structures",
    "EntityMap": "glip.structures",
    "Prompt": "glip.text",
    "caption_prompt": "glip.text",
    "detection_prompt": "glip.text",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'glip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Detections",
    "EntityMap",
    "GLIPConfig",
    "GLIPError",
    "GLIPInputs",
    "GLIPModel",
    "GLIPOutput",
    "GLIPPredictor",
    "GLIPProcessor",
    "ImageError",
    "OutputError",
    "Prompt",
    "PromptError",
    "__version__",
    "caption_prompt",
    "detection_prompt",
    "load_image",
]
