"""sparkship: Spark MLlib models from a Delta training table to production on Databricks."""
from sparkship._version import __version__

__all__ = ["__version__"]
