"""Repair: what a person decides when a saga goes wrong (retry, skip, compensate, resolve) and an approved
action failed (retry), made with a patch of `spec.repair`, stamped and checked at admission."""
