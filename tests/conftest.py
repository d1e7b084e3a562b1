"""Shared fixtures: models are loaded once per session (they are slow to build)."""

from __future__ import annotations

import functools

import pytest
import torch

import latentmotion as lm


@functools.lru_cache(maxsize=None)
def model(name: str, weights: str = "random") -> lm.ImageNetModel:
    """ResNet/DenseNet weights are not on this machine: seeded random; EfficientNet-Lite0 is trained."""
    if name == "efficientnet_lite0":
        weights = "imagenet"
    return lm.load_model(name, weights=weights, seed=0)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
