"""Engines that run mel's jobs past one process (Ray Data: `mel[ray]`), through the Python API."""
