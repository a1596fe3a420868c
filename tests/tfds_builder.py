"""A tiny tensorflow-datasets builder for tests: builds offline (no download) in array_record."""

import numpy as np
import tensorflow_datasets as tfds


def document(index: int) -> str:
    """The deterministic text of example ``index``."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    rng = np.random.default_rng(index)
    body = " ".join(rng.choice(words, size=40 + index % 30))
    return f"Example {index}: {body}."


class NeoscaleTestText(tfds.core.GeneratorBasedBuilder):
    """``neoscale_test_text``: NUM_EXAMPLES short documents with "text" and "title" features."""

    VERSION = tfds.core.Version("1.0.0")
    NUM_EXAMPLES = 200

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict(
            {"text": tfds.features.Text(), "title": tfds.features.Text(), "id": np.int32}
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(self.NUM_EXAMPLES):
            yield i, {"text": document(i), "title": f"title {i}", "id": i}


def build(data_dir: str) -> None:
    """Builds the dataset into data_dir (array_record format)."""
    NeoscaleTestText(data_dir=data_dir, file_format="array_record").download_and_prepare()
