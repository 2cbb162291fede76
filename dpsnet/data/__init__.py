"""Data: dataset registrars (RPC, D2S, the mini world, your own), the mini world, the checker."""

from dpsnet.data import datasets  # noqa: F401  (registers every built-in dataset name, lazily)
