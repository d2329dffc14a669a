"""Approvals in one place: the rules, the workflow, the TaskSaga gate and its kopf handlers.

`rules` is pure (the resource in, events and manifests out), `workflow` is deterministic workflow code, and
`handlers` holds the only I/O (kopf handlers, the Kubernetes client). Admission of approvals (who may decide)
is in `steadfast.webhooks` with the other kinds' admission.
"""
