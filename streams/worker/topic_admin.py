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
    ERASURES,
    IDENTITY_MERGES,
    IDENTITY_OPS,
    INPUT_TOPICS,
    MODEL_QUALITY,
    MODEL_TRAINING,
    SUPPRESSIONS,
)


def topic_specs(partitions: int, retention_days: int) -> list[NewTopic]:
    """Input topics share one partition count (co-partitioned); profiles, audiences, suppressions and
    models are compacted (each key's last record kept), the others keep records ``retention_days``.

    >>> specs = {spec.name: spec for spec in topic_specs(4, 7)}
    >>> specs["purchases"].topic_configs, specs["audiences"].topic_configs
    ({'retention.ms': '604800000'}, {'cleanup.policy': 'compact'})
    """
    compacted = {"cleanup.policy": "compact"}
    kept = {"retention.ms": str(retention_days * 86_400_000)}
    specs = []
    for name in INPUT_TOPICS:
        specs.append(NewTopic(name, partitions, 1, topic_configs=compacted if name == CUSTOMER_PROFILES else kept))
    for name in (IDENTITY_OPS, ERASURES, DEAD_LETTERS, CHURN_ALERTS, IDENTITY_MERGES, AUDIENCE_UPDATES):
        specs.append(NewTopic(name, partitions, 1, topic_configs=kept))  # identity ops, erasures: read with the input
    specs.append(NewTopic(AUDIENCES, 1, 1, topic_configs=compacted))
    specs.append(NewTopic(SUPPRESSIONS, 1, 1, topic_configs=compacted))
    specs.append(NewTopic(MODEL_TRAINING, 1, 1, topic_configs=kept))
    specs.append(NewTopic(MODEL_QUALITY, 1, 1, topic_configs=kept))
    specs.append(NewTopic(CHURN_MODELS, 1, 1, topic_configs=compacted))
    return specs


def ensure_topics(bootstrap: str, partitions: int, retention_days: int) -> dict[str, int]:
    """Create missing topics; returns each topic's partition count (existing ones as found)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="crm360-admin")
    try:
        existing = set(admin.list_topics())
        missing = [spec for spec in topic_specs(partitions, retention_days) if spec.name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        names = [spec.name for spec in topic_specs(partitions, retention_days)]
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    finally:
        admin.close()
