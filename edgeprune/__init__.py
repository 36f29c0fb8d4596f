"""edgeprune: structured channel pruning searched with latency measured on the target."""

__version__ = "0.1.0"
