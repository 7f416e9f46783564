"""What several test modules share: ports, processes killed mid-write, a standalone cluster, a fake Databricks
workspace, the in-process CLI and the repository's paths."""
