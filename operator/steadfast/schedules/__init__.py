"""SagaSchedule: TaskSagas created on a cron schedule by a durable workflow (see docs/schedules.md)."""
