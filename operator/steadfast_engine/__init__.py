"""A local Dapr workflow engine: daprd's ``TaskHubSidecarService`` gRPC API, durable on SQLite.

It plays the role Azurite plays for Azure Storage: the unmodified ``dapr-ext-workflow`` client and
worker talk to it exactly as they talk to daprd, so end-to-end runs work without Docker or daprd.
A package of its own: it imports nothing of the operator (``steadfast``), and the operator's runtime imports
nothing of it (both are import-linter contracts in pyproject.toml).
"""

from __future__ import annotations

__all__ = ["DEFAULT_PORT"]

DEFAULT_PORT = 4001
