"""dj-webhooks benchmarks: ``python bench/run.py --help``."""
