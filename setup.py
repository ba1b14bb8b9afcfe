from setuptools import find_packages, setup

setup(
    name="paddlemix_r1",
    version="0.1.0",
    description="R1-style GRPO training of Qwen2-VL / Qwen2.5-VL in PaddlePaddle",
    packages=find_packages(include=["paddlemix_r1", "paddlemix_r1.*"]),
    package_data={"paddlemix_r1.ops": ["csrc/*.cc", "csrc/*.h"]},  # CPU kernels, compiled on first use (ops/cpu_ext.py)
    python_requires=">=3.10",
    # Paddle is not a hard requirement: the GPU build is the distribution "paddlepaddle-gpu", which pip does
    # not count as "paddlepaddle", so requiring the latter would install the CPU wheel over a GPU install
    # (both write site-packages/paddle). CPU: pip install -e ".[cpu]"; GPU: install paddlepaddle-gpu from
    # Paddle's package index first (README, "GPU"). paddlemix_r1/__init__.py checks the version at import.
    install_requires=[
        "numpy",
        "pillow",
        "pyyaml",
        "safetensors",
        "tokenizers",
        "jinja2",
        "math-verify",
        "visualdl",
        "tqdm",
        "pyarrow",
        "rapidfuzz",  # rewards: VLM-R1's fuzzy ratio (python-Levenshtein's ratio)
        "faster-coco-eval",  # rewards: COCO AP for the OVD rewards
        "matplotlib",  # eval/pass_at_k.py: the pass@k plot (log2 k axis)
        "fastapi",  # serve: the OpenAI-compatible chat endpoint
        "uvicorn",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=3.3.1"],
        "test": [
            "pytest",
            "hypothesis",
            "torch==2.13.0",
            "transformers>=5.0",
            "trl",
            "peft",
            "openai",  # tests/serve: the official client against our server
        ],
    },
    entry_points={"console_scripts": ["paddlemix-r1=paddlemix_r1.cli:main"]},
)
