"""orchgpt: an agent mesh over mutual-TLS gRPC."""

__version__ = "0.1.0"
