"""glip: GLIP and GLIPv2 grounded language-image models in pure PyTorch.

Public API re-exports only; see the README for usage.
"""

from glip.config import GLIPConfig
from glip.errors import CheckpointError, ConfigError, DataError, GLIPError, ImageError, PromptError
from glip.modeling.glip import GLIPModel, GLIPOutput
from glip.predictor import GLIPPredictor
from glip.processing import GLIPInputs, GLIPProcessor, load_image
from glip.structures import Detections, EntityMap
from glip.text import Prompt, caption_prompt, detection_prompt

__version__ = "0.1.0"

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
    "Prompt",
    "PromptError",
    "__version__",
    "caption_prompt",
    "detection_prompt",
    "load_image",
]
