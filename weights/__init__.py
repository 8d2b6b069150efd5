"""The model registry (registry.json) and small bundled weights, installed as ``videomt_cli.weights``."""
