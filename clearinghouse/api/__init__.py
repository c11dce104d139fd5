"""The partner HTTP API."""
