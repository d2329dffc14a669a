"""Approvals in one place: admission, the rules, the workflow, the TaskSaga gate, its handlers and the CLI.

`admission` (who may decide, that a decision is final) and `rules` (the resource in, events and manifests
out) are pure; `workflow` is deterministic workflow code; `handlers` holds the kopf handlers and the
Kubernetes client; `cli` is `steadfast approve | reject`. `steadfast.webhooks` serves the admission rules
with the other kinds'.
"""
