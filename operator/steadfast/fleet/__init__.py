"""The fleet view: Steadfast resources across namespaces, filtered server-side where the API server can."""
