"""RunConfig from the flat settings of ``neoscale.train``'s flags (size, model_overrides, data
fields, vocab_size), as tests spell tiny runs."""

from neoscale.training.config import RunConfig


def flat_run(**settings) -> RunConfig:
    return RunConfig.from_flat(settings)
