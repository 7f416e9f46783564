"""Print the Markdown table of which pyspark.ml classes the JVM-free scorer supports (and why others are refused).

    PYTHONPATH=src .venv/bin/python scripts/scorer_coverage.py            # the table
    PYTHONPATH=src .venv/bin/python scripts/scorer_coverage.py --check    # exit 1 if a class is in neither list

The table comes from sparkship.serving.catalog.STAGES (supported) and sparkship.serving.coverage.REFUSED
(refused, with the reason); pyspark (any 3.5+/4.x) is needed to list pyspark.ml's classes.
"""
from __future__ import annotations

import argparse
import sys

from sparkship.serving import coverage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a class is neither supported nor refused")
    args = parser.parse_args(argv)
    classes = coverage.pyspark_classes()
    table = coverage.markdown_table(classes)
    print(table)
    missing = [row for row in table.splitlines() if "❓" in row]
    if args.check and missing:
        print(f"\n{len(missing)} class(es) neither supported nor refused", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
