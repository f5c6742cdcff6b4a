"""Test-only fault injection: a bug met by the events whose ids are in ``FAULT_FAILING_EVENTS``
(comma-separated): applying them raises, in every process started with this folder first on
``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up)."""

import os

failing = set(filter(None, os.environ.get("FAULT_FAILING_EVENTS", "").split(",")))
if failing:
    from streams.worker import pipeline

    count_event = pipeline.count_event

    def failing_count(state, event, config, ts):
        if event.event_id in failing:
            raise ZeroDivisionError("injected by tests/faults")
        return count_event(state, event, config, ts)

    pipeline.count_event = failing_count
