"""neoscale: scaling-law studies of GPT-Neo language models in JAX."""

__version__ = "0.1.0"
