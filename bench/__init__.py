"""x402pay's benchmarks: each ``bench_*.py`` module runs with ``python -m bench.<name>``; see README.md here."""
