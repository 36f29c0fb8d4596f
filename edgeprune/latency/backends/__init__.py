"""Latency backends, one module each; every module here registers itself (see ``latency.base``)."""
