"""Kafka topic names: the contract with producers and subscribers."""

PURCHASES = "purchases"
VISITS = "visits"
SOCIAL_INTERACTIONS = "social-interactions"
CUSTOMER_PROFILES = "customer-profiles"
IDENTIFY = "identify"
DEAD_LETTERS = "dead-letters"
CHURN_ALERTS = "churn-alerts"
#: Every merge of two profiles and every refused link (``schemas.rows.IdentityMerge``).
IDENTITY_MERGES = "identity-merges"
#: Audience definitions, keyed by name (compacted, one partition; ``schemas.audiences.Audience``).
AUDIENCES = "audiences"
#: Every entry into and exit from an audience (``schemas.audiences.AudienceEvent``), keyed by customer.
AUDIENCE_UPDATES = "audience-updates"
#: Suppressed identifiers, keyed by their digest (compacted, one partition; ``schemas.privacy.Suppression``).
SUPPRESSIONS = "suppressions"
#: Erasures for the owner of each identifier's partition (``schemas.privacy.Erasure``), keyed by
#: the identifier, co-partitioned with the input topics and read with them.
ERASURES = "erasures"
#: Changes of the live churn model's quality (``schemas.alerts.ModelQualityAlert``), keyed by model.
MODEL_QUALITY = "model-quality"
#: Internal: labelled snapshots and customer samples for the one trainer (one partition),
#: and the model versions it publishes to every worker (compacted, one partition).
MODEL_TRAINING = "model-training"
CHURN_MODELS = "churn-models"
#: Internal: the identity graph's work between partitions (``processors.identity_graph``),
#: JSON arrays of ops for the partition of their identifiers (``Op.pack``), co-partitioned with the input topics.
IDENTITY_OPS = "identity-ops"

#: Input topics, all keyed by ``customer_id`` and co-partitioned.
INPUT_TOPICS: tuple[str, ...] = (PURCHASES, VISITS, SOCIAL_INTERACTIONS, CUSTOMER_PROFILES, IDENTIFY)

#: The input topic each event type is published to.
TOPIC_FOR_TYPE: dict[str, str] = {
    "purchase": PURCHASES,
    "visit": VISITS,
    "social_interaction": SOCIAL_INTERACTIONS,
    "customer_profile": CUSTOMER_PROFILES,
    "identify": IDENTIFY,
}


def partition_for(customer_id: str | bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner gives a customer key.

    >>> partition_for("c1", 4) == partition_for(b"c1", 4)
    True
    """
    from kafka.partitioner.default import murmur2

    key = customer_id.encode() if isinstance(customer_id, str) else customer_id
    return (murmur2(key) & 0x7FFFFFFF) % partitions
