from setuptools import find_packages, setup

setup(
    name="paddlemix_r1",
    version="0.1.0",
    description="R1-style GRPO training of Qwen2-VL / Qwen2.5-VL in PaddlePaddle",
    packages=find_packages(include=["paddlemix_r1", "paddlemix_r1.*"]),
    package_data={"paddlemix_r1.ops": ["csrc/*.cc", "csrc/*.h"]},  # CPU kernels, compiled on first use (ops/cpu_ext.py)
    python_requires=">=3.10",
    install_requires=[
        "paddlepaddle>=3.3.1",
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
    ],
    extras_require={
        "test": [
            "pytest",
            "hypothesis",
            "torch==2.13.0",
            "transformers>=5.0",
            "trl",
        ],
    },
    entry_points={"console_scripts": ["paddlemix-r1=paddlemix_r1.cli:main"]},
)
