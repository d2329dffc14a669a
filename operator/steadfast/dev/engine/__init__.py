"""A local Dapr workflow engine: daprd's ``TaskHubSidecarService`` gRPC API, durable on SQLite.

It plays the role Azurite plays for Azure Storage: the unmodified ``dapr-ext-workflow`` client and
worker talk to it exactly as they talk to daprd, so end-to-end runs work without Docker or daprd.
The package imports nothing else from ``steadfast`` so that it can become its own distribution.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PORT"]

DEFAULT_PORT = 4001
