"""The GPT-Neo model family: configuration, layers, mixture-of-experts and the full model."""

from neoscale.model.config import ModelConfig
from neoscale.model.transformer import GPTNeo

__all__ = ["GPTNeo", "ModelConfig"]
