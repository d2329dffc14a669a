"""The workflows (saga, monitor, approval) and the activities they share: deterministic code, effects in activities."""
