"""mel: offline, batch, multilingual entity linking with dense retrieval."""

__version__ = "0.1.0"
