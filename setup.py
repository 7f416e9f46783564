"""sparkship: train, register, validate, score, serve and monitor Spark MLlib models on Databricks."""
from pathlib import Path

from setuptools import find_packages, setup

about: dict = {}
exec((Path(__file__).parent / "src" / "sparkship" / "_version.py").read_text(), about)

LOCAL = ["pyspark==4.0.*", "pandas>=2.2,<3"]
DEV = LOCAL + [
    "pytest>=8",
    "pytest-timeout",
    "chispa==0.12.0",
    "duckdb==1.5.5",
    "duckdb-extension-delta==1.5.5",
    "hypothesis",
    "httpx",
    "databricks-bundles",
    "build",
    "wheel",
]

setup(
    name="sparkship",
    version=about["__version__"],
    description="Take Spark MLlib models from a Delta training table to production on Databricks.",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"sparkship": ["py.typed"]},
    python_requires=">=3.10",
    # Nothing here may replace the pyspark / pandas that a Databricks cluster ships.
    install_requires=[
        "numpy>=1.24",
        "pyarrow>=14",
        "deltalake>=1.0",
        "pyyaml>=6",
        "fastapi>=0.110",
        "uvicorn>=0.27",
        "matplotlib>=3.7",
        "databricks-sdk>=0.30",
    ],
    # bench: benchmarks/serve_latency.py compares with MLflow's spark flavor (never a runtime dependency)
    extras_require={"local": LOCAL, "dev": DEV, "bench": LOCAL + ["mlflow-skinny", "httpx"]},
    entry_points={
        "console_scripts": [
            "sparkship=sparkship.cli:run",
            # python_wheel_task entry points (see databricks.yml / resources/)
            "sparkship-train=sparkship.entrypoints:train",
            "sparkship-validate=sparkship.entrypoints:validate",
            "sparkship-promote=sparkship.entrypoints:promote",
            "sparkship-score=sparkship.entrypoints:score",
            "sparkship-monitor=sparkship.entrypoints:monitor",
        ],
    },
)
