"""sparkship: train, register, validate, score, serve and monitor Spark MLlib models on Databricks."""
from pathlib import Path

from setuptools import find_packages, setup

about: dict = {}
exec((Path(__file__).parent / "src" / "sparkship" / "_version.py").read_text(), about)

# Local Spark as on Databricks Runtime 17.3 LTS (Spark 4.0 + Delta 4.0); Delta's jars come from the Makefile.
LOCAL = ["pyspark==4.0.*", "delta-spark==4.0.*", "pandas>=2.2,<3",
         # pyspark[connect]: `--remote` / SPARK_REMOTE sessions (Databricks clusters ship their own)
         "grpcio>=1.67", "grpcio-status>=1.67", "googleapis-common-protos>=1.65", "zstandard>=0.25"]
# The 15.4 / 16.4 LTS line (Spark 3.5 + Delta 3.3), for the compatibility smoke flow.
SPARK35 = ["pyspark==3.5.*", "delta-spark==3.3.2", "pandas>=2.0,<3"]
# `sparkship bundle check` (and building the bundle's wheel); a command that needs an extra names it.
BUNDLE = ["build"]
# export/publish to MLflow; the exported pyfunc itself needs only mlflow, numpy, pandas and pyarrow.
MLFLOW = ["mlflow>=2.16"]
# `sparkship export --format onnx` (onnxmltools' Spark converter; ONNX Runtime checks the exported graph).
ONNX = ["onnx>=1.16", "onnxmltools>=1.12", "onnxruntime>=1.18"]
# An optional compiled kernel for tree ensembles in the JVM-free scorer (numpy is the fallback).
FAST = ["numba>=0.60"]
# Models fitted with xgboost.spark: registered and scored in Spark, served without a JVM through xgboost's Booster.
# The CPU-only wheel (a few MB; the default one brings NCCL for GPUs); xgboost.spark also imports cloudpickle and
# scikit-learn (xgboost's own `pyspark` extra would install pyspark over a cluster's).
XGBOOST = ["xgboost-cpu>=2.1", "cloudpickle", "scikit-learn"]
DEV = LOCAL + BUNDLE + MLFLOW + ONNX + FAST + XGBOOST + [
    "pytest>=8",
    "pytest-timeout",
    "pytest-xdist>=3.6",  # `make test` runs the modules on two workers
    "chispa==0.12.0",
    "duckdb==1.5.5",
    "duckdb-extension-delta==1.5.5",
    "hypothesis",
    "scipy",  # independent PSI and metric computations in the tests
    "scikit-learn",
    "httpx",
    "wheel",
    # `make lint` (configured in pyproject.toml); pinned so that every machine reports the same findings.
    "ruff==0.17.6",
    "mypy==2.4.1",
]

setup(
    name="sparkship",
    version=about["__version__"],
    description="Take Spark MLlib models from a Delta training table to production on Databricks.",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"sparkship": ["py.typed", "bundle/cli_schema.json"]},
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
        "sqlglot>=25",  # SQLTransformer statements in the JVM-free scorer (pure Python)
        "jsonschema>=4.18",  # `sparkship bundle check`: the Databricks CLI's bundle schema (pure Python)
    ],
    # bench: benchmarks/serve_latency.py compares with MLflow's spark flavor (never a runtime dependency)
    extras_require={"local": LOCAL, "spark35": SPARK35, "bundle": BUNDLE, "mlflow": MLFLOW, "onnx": ONNX, "fast": FAST,
                    "xgboost": XGBOOST, "dev": DEV,
                    "bench": LOCAL + ["mlflow-skinny", "httpx"]},
    entry_points={
        "console_scripts": [
            "sparkship=sparkship.cli:run",
            # python_wheel_task entry points (see databricks.yml / resources/)
            "sparkship-train=sparkship.entrypoints:train",
            "sparkship-validate=sparkship.entrypoints:validate",
            "sparkship-promote=sparkship.entrypoints:promote",
            "sparkship-score=sparkship.entrypoints:score",
            "sparkship-monitor=sparkship.entrypoints:monitor",
            "sparkship-retrain=sparkship.entrypoints:retrain",
            "sparkship-publish=sparkship.entrypoints:publish",
            "sparkship-register=sparkship.entrypoints:register",
        ],
    },
)
