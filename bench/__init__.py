"""Side-by-side benchmarks of runbookd against real peers on 127.0.0.1 (see bench/README.md).

Run with `make bench` (quick) or `make bench FULL=1` (full); `python -m bench --help`.
"""
