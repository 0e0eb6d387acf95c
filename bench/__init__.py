"""Benchmarks of profiled against reference tools, run side by side (docs/benchmarks.md).

``make bench`` runs them all; each module also runs alone with
``.venv/bin/python -m bench.<name>`` and writes ``bench/results/<name>.json``.
``bench.report`` turns those files into the tables of docs/benchmarks.md.
"""
