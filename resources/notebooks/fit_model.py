# Databricks notebook source
# MAGIC %md
# MAGIC # Fit a model for sparkship to register
# MAGIC
# MAGIC The first task of the bundle's `registration` job (resources/registration.yml). It fits a Spark ML pipeline
# MAGIC on the training table and saves it to `output`; the job's next task, `sparkship-register`, registers that
# MAGIC folder as the next version of the model (metrics on the same table, lineage: the job run).
# MAGIC
# MAGIC Replace the pipeline below with your own: any fitted `PipelineModel`, single model, `CrossValidatorModel` or
# MAGIC `TrainValidationSplitModel` registers, and so do models of xgboost's Spark estimators (`xgboost.spark`).

# COMMAND ----------

dbutils.widgets.text("table", "main.sparkship.churn_training")  # noqa: F821 - Databricks' notebook globals
dbutils.widgets.text("label", "churned")  # noqa: F821
dbutils.widgets.text("output", "")  # noqa: F821
table = dbutils.widgets.get("table")  # noqa: F821
label = dbutils.widgets.get("label")  # noqa: F821
output = dbutils.widgets.get("output")  # noqa: F821
if not output:
    raise ValueError("the notebook needs the `output` parameter: the folder to save the fitted model to")

# COMMAND ----------

# sparkship's table references: a Unity Catalog name or a Delta path, with an optional @VERSION.
name, _, version = table.partition("@")
reader = spark.read.option("versionAsOf", int(version)) if version else spark.read  # noqa: F821
data = reader.format("delta").load(name) if name.startswith("/") else reader.table(name)

# COMMAND ----------

from pyspark.ml import Pipeline  # noqa: E402
from pyspark.ml.classification import RandomForestClassifier  # noqa: E402
from pyspark.ml.feature import Imputer, OneHotEncoder, StringIndexer, VectorAssembler  # noqa: E402

numeric = ["age", "tenure_months", "monthly_charges", "support_calls"]
categorical = ["plan", "region"]
pipeline = Pipeline(stages=[
    Imputer(inputCols=numeric, outputCols=[f"{c}_imputed" for c in numeric], strategy="median"),
    StringIndexer(inputCols=categorical, outputCols=[f"{c}_index" for c in categorical], handleInvalid="keep"),
    OneHotEncoder(inputCols=[f"{c}_index" for c in categorical], outputCols=[f"{c}_onehot" for c in categorical]),
    VectorAssembler(inputCols=[f"{c}_imputed" for c in numeric] + [f"{c}_onehot" for c in categorical],
                    outputCol="features"),
    RandomForestClassifier(labelCol=label, numTrees=50, maxDepth=6, seed=7),
])
model = pipeline.fit(data.where(data[label].isNotNull()))
model.write().overwrite().save(output)
print(f"fitted {type(model.stages[-1]).__name__} on {table}, saved to {output}")
