"""The web console: overview, approvals inbox, saga timelines and monitor pages, always as the viewer.

Every Kubernetes API call a page makes carries the viewer's own credentials (steadfast.console.identity), so
RBAC decides what each person sees and the admission webhooks judge and stamp each decision as for `kubectl`.
"""
