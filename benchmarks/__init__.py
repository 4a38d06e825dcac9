"""Benchmarks: baseline apps (`benchmarks.baselines`) and the harness (`benchmarks.run`)."""
