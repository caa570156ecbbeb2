"""Shared fixtures: repository paths and a tiny saved model that produces detections."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE_IMAGE = REPO / "assets" / "raccoon-72.jpg"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample_image() -> Path:
    """A real photo (Raccoon dataset validation image, MIT) shipped in the repository."""
    return SAMPLE_IMAGE


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random model whose logits are biased upwards so that it returns detections."""
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel

    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny()).eval()
    with torch.no_grad():
        model.head.bias0.fill_(3.0)  # token probabilities ~0.95: every location is a candidate
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_mask_model_dir(tmp_path_factory) -> Path:
    """The biased tiny model with a GLIPv2 mask head (random weights, 16x16 masks)."""
    from glip.config import GLIPConfig
    from glip.modeling.glip import GLIPModel

    torch.manual_seed(0)
    model = GLIPModel(GLIPConfig.tiny().replace(**{"heads.mask": {"pooler_resolution": 8}})).eval()
    with torch.no_grad():
        model.head.bias0.fill_(3.0)
    out = tmp_path_factory.mktemp("tiny_mask_model")
    model.save_pretrained(out)
    return out
