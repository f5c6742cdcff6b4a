"""The worker: what runs in production. It consumes events, keeps customer state, scores,
writes ClickHouse and answers HTTP."""
