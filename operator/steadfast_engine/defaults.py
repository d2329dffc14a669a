"""Defaults shared by the command line and the engine (importable without gRPC or the SDK)."""

from __future__ import annotations

# daprd reaches a workflow only through its actor, which exists only while a worker is connected: a call on an
# instance waits this long for one (placement's lookup), then is refused; a start waits for one until its deadline.
DEFAULT_WORKER_WAIT = 5.0
# The app ID in daprd's "did not find address for actor 'dapr.internal.default.<app ID>.workflow/<ID>'".
DEFAULT_APP_ID = "steadfast"
