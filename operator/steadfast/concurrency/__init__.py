"""Concurrency limits of TaskSagas (#26): a durable semaphore per namespace and key, a workflow of its own.

`records.py` (names and wire records), `rules.py` (pure: key rendering, the limit from spec and policies),
`queue.py` (pure: the semaphore's holders and FIFO line), `keeper.py` (the semaphore's workflow),
`activities.py` (the side effects: create the keeper, raise events, check instances). See docs/architecture.md.
"""
