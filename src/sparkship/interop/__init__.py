"""Interoperability with other model platforms.

* :mod:`sparkship.interop.mlflow_pyfunc` - the MLflow ``python_function`` loader (no pyspark, no mlflow import);
* :mod:`sparkship.interop.mlflow_export` - an MLflow model directory from a sparkship artifact;
* :mod:`sparkship.interop.mlflow_publish` - log it in an MLflow run and register it (Unity Catalog on Databricks).

MLflow is an extra (``pip install 'sparkship[mlflow]'``), never a dependency of the core wheel.
"""
