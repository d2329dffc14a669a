"""Saga templates: reading a TaskSaga's template, checking its parameters, rendering the run's definition."""
