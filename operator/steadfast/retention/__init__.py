"""Retention: finished TaskSagas and ApprovalRequests are deleted a while after they end, by outcome.

`rules` (pure, for workflows too) says which phases may go and when (`status.retainedUntil`); `policy` (pure)
resolves a resource's retention from its spec, the admins' SteadfastPolicy rules and the operator's default
when it starts (recorded in its workflow input); `sweeper` deletes what is due, through the normal path.
"""
