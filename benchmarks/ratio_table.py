"""The benchmarks' result table: median seconds of each way, its rounds, and its ratio to a baseline way."""
from __future__ import annotations

import statistics


def print_ratio_table(seconds: dict[str, list[float]], baseline: str, first_column: str) -> None:
    """Print a Markdown table, one row per way of ``seconds`` (way -> seconds of each round), in its order."""
    base = statistics.median(seconds[baseline])
    print(f"| {first_column} | median s | rounds s | ratio |")
    print("| --- | ---: | --- | ---: |")
    for name, runs in seconds.items():
        median = statistics.median(runs)
        print(f"| {name} | {median:.2f} | {', '.join(f'{r:.2f}' for r in runs)} | {median / base:.2f}x |")
