"""Creating the topics crm360 reads and writes, with the configured partition count."""

from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from schemas.topics import (
    AUDIENCE_UPDATES,
    AUDIENCES,
    CHURN_ALERTS,
    CHURN_MODELS,
    CUSTOMER_PROFILES,
    DEAD_LETTERS,
    IDENTITY_MERGES,
    IDENTITY_OPS,
    INPUT_TOPICS,
    MODEL_TRAINING,
)


def topic_specs(partitions: int) -> list[NewTopic]:
    """Input topics share one partition count (co-partitioned); profiles, audiences and models are compacted."""
    specs = []
    for name in INPUT_TOPICS:
        config = {"cleanup.policy": "compact"} if name == CUSTOMER_PROFILES else {}
        specs.append(NewTopic(name, partitions, 1, topic_configs=config))
    specs.append(NewTopic(IDENTITY_OPS, partitions, 1))  # co-partitioned: read with the input
    specs.append(NewTopic(DEAD_LETTERS, partitions, 1))
    specs.append(NewTopic(CHURN_ALERTS, partitions, 1))
    specs.append(NewTopic(IDENTITY_MERGES, partitions, 1))
    specs.append(NewTopic(AUDIENCE_UPDATES, partitions, 1))
    specs.append(NewTopic(AUDIENCES, 1, 1, topic_configs={"cleanup.policy": "compact"}))
    specs.append(NewTopic(MODEL_TRAINING, 1, 1))
    specs.append(NewTopic(CHURN_MODELS, 1, 1, topic_configs={"cleanup.policy": "compact"}))
    return specs


def ensure_topics(bootstrap: str, partitions: int) -> dict[str, int]:
    """Create missing topics; returns each topic's partition count (existing ones as found)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="crm360-admin")
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(partitions) if spec.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        names = [spec.name for spec in topic_specs(partitions)]
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()
