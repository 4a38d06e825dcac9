"""Small, honest apps of the designs users would otherwise pick, one module each.

Each runs as one server process: `python -m benchmarks.baselines.NAME --port P ...`.
"""
