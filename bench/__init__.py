"""edgerq benchmark harness: ``python -m bench.run`` and ``python -m bench.scale``."""
