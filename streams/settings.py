"""All configuration, read once from ``CRM360_*`` environment variables and passed down.

Examples
--------
>>> s = Settings(data_dir="/tmp/x")
>>> s.kafka_bootstrap, s.clickhouse_url, s.web_port, s.partitions
('127.0.0.1:9092', 'chdb:///tmp/x/clickhouse', 6066, 4)
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Literal, TypedDict
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processors.config import FeatureConfig, IdentityConfig, ModelConfig
from processors.quality_watch import QualityBand
from sinks.tables import READER

#: The processors' defaults, which the settings take as theirs.
_FEATURES, _MODELS, _IDENTITY = FeatureConfig(), ModelConfig(), IdentityConfig()


class RocksDBSizes(TypedDict):
    """faust's RocksDB options that :meth:`Settings.rocksdb_options` sets."""

    write_buffer_size: int
    max_write_buffer_number: int
    block_cache_size: int
    target_file_size_base: int


class Role(Enum):
    """What a process of a worker is: the main one (its web address is the worker's; with
    embedded ClickHouse it writes every process's rows; it starts the helpers) or a helper."""

    MAIN = "main"
    HELPER = "helper"


class Settings(BaseSettings):
    """crm360 settings; every field can be set as ``CRM360_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="CRM360_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    data_dir: Path = Path(".crm360")
    clickhouse_dsn: str | None = Field(
        default=None, description="Default chdb://<data_dir>/clickhouse; http://user:pass@host:8123/db for a server."
    )
    # On a server, /sql, the dashboard and `crm360 sql` read as the read-only user crm360_reader,
    # created at worker start with this password (default: the DSN's).
    clickhouse_reader_password: SecretStr | None = None
    # Analysts' queries (/sql) run on this many connections of their own; more wait for one.
    sql_connections: int = Field(default=2, ge=1)
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # With embedded ClickHouse, the worker serves ClickHouse's HTTP interface, read-only, on
    # web_host at this port for analysts' own clients (0: not served).
    clickhouse_http_port: int = Field(default=8123, ge=0)
    partitions: int = Field(default=4, ge=1)
    app_id: str = "crm360"
    api_key: SecretStr | None = None
    log_level: str = "warning"

    # Worker processes per `crm360 worker` (0: one per CPU core, at most one per partition).
    # One process runs the pipeline on one core; the others join its consumer group.
    worker_processes: int = Field(default=0, ge=0)
    # Internal: set by the main worker process for its helpers (its web address; with
    # embedded ClickHouse, which one process only can open, helpers send it their rows).
    main_url: str | None = None

    # Where customer states live: "rocksdb" (on disk under <data dir>/faust, the last
    # state_cache_customers written kept decoded; a restart reads only the changelog written
    # since the last checkpoint) or "memory" (every state decoded in RAM, rebuilt from the
    # changelog at each start).
    state_store: Literal["memory", "rocksdb"] = "rocksdb"
    state_cache_customers: int = Field(default=100_000, ge=1)
    # Internal: which helper process this is (1, 2, ...), naming its table files.
    helper_number: int = 0

    # Kafka consumer group timing: short for the local broker (joins take half the session
    # timeout there); docker-compose sets production values.
    session_timeout_s: float = 2.0
    heartbeat_interval_s: float = 0.5

    # POST /events answers 503 when Kafka has not acknowledged its events within this time.
    publish_timeout_s: float = Field(default=5.0, gt=0)

    # Batching: messages per processing batch, and the longest wait to fill one (a backlog
    # fills it at once; each hop of an identity merge and each fresh event waits for it).
    batch_max_messages: int = 1_000
    batch_within_s: float = Field(default=0.02, gt=0)
    # ClickHouse writes: rows wait at most this long (each insert has a fixed cost, so
    # several batches share one), or until this many are pending. Offsets are committed
    # only after the rows of their messages are written.
    flush_interval_s: float = Field(default=0.5, gt=0)
    flush_max_rows: int = Field(default=100_000, ge=1)
    # Offsets are committed this often. Each commit holds processing while every pending row
    # is written; a longer interval means fewer such pauses, and more input read again after
    # a crash (which changes nothing: applying is idempotent).
    commit_interval_s: float = Field(default=10.0, gt=0)
    # How often (wall clock) idle customers are aged to the partition's watermark.
    aging_interval_s: float = 5.0
    # An aging pass re-emits every customer of a partition: over a large population (a
    # replay of history moves event time fast) passes are spaced so they take at most this
    # share of the worker's time.
    aging_max_share: float = Field(default=0.1, gt=0, le=1)
    # Customers visited per slice of an aging pass (streams/worker/aging.py: each is visited twice, to
    # release labels and to be re-emitted; a slice takes up to ~0.1-0.2 s); batches are processed
    # between slices.
    aging_slice: int = Field(default=2_000, ge=1)
    # Idle customers are re-emitted once their partition's watermark moved this much event time.
    aging_min_advance_s: float = 3_600.0

    # Where every churn alert is POSTed (as audiences' entries go to theirs), if anywhere.
    alert_webhook: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2_000)
    # A webhook's tries per alert, entry or exit (then a dead letter), the wait before the
    # second try (doubling after each), and how long one try may take (seconds).
    webhook_tries: int = Field(default=5, ge=1, le=20)
    webhook_backoff_s: float = Field(default=0.5, ge=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)

    # Retention (days; none: kept until erased). Raw events and dead letters leave ClickHouse
    # this long after they were written (table TTLs, set at every start); the Kafka topics
    # crm360 creates keep their records this long (``retention.ms``; compacted ones keep each
    # key's last record).
    raw_events_retention_days: int | None = Field(default=None, ge=1)
    dead_letters_retention_days: int | None = Field(default=90, ge=1)
    topic_retention_days: int = Field(default=7, ge=1)

    # The live dashboard redraws itself this often (seconds).
    dashboard_refresh_s: float = Field(default=5.0, gt=0)

    # Events more than this far ahead of the wall clock (seconds) are dead-lettered: one
    # event would drag its partition's event time (watermark) with it.
    max_future_s: float = Field(default=_FEATURES.max_future_s, ge=0)
    allowed_lateness_days: float = _FEATURES.allowed_lateness_days
    engagement_half_life_days: float = _FEATURES.engagement_half_life_days
    new_customer_days: float = _FEATURES.new_customer_days
    at_risk_days: float = _FEATURES.at_risk_days
    churn_days: float = _FEATURES.churn_days

    # Models (see processors.config.ModelConfig for what each means).
    churn_horizon_days: float = _MODELS.churn_horizon_days
    snapshot_every_days: float = _MODELS.snapshot_every_days
    segments: int = Field(default=_MODELS.segments, ge=2)
    segment_warmup: int = Field(default=_MODELS.segment_warmup, ge=1)
    alert_threshold: float = Field(default=_MODELS.alert_threshold, gt=0, le=1)
    alert_rearm_below: float = Field(default=_MODELS.alert_rearm_below, ge=0, le=1)
    alert_cooldown_days: float = _MODELS.alert_cooldown_days
    alert_value_tiers: list[str] = []
    alert_holdout_share: float = Field(default=0.0, ge=0, le=1)
    clv_horizon_days: float = _MODELS.clv_horizon_days
    # Identity resolution (see processors.config.IdentityConfig): the kinds of identifiers,
    # the most lasting first; the kinds a person holds one value of; identifiers per profile.
    identifier_kinds: list[str] = list(_IDENTITY.kinds)
    unique_identifier_kinds: list[str] = sorted(_IDENTITY.unique_kinds)
    max_identifiers: int = Field(default=_IDENTITY.max_identifiers, ge=2)
    # Customers scored by an older model version are re-scored at most this often.
    rescore_interval_s: float = 30.0
    # The trainer publishes a new model version at most this often.
    trainer_publish_interval_s: float = 1.0
    # The trainer learns the labels it holds once no partition released any for this long.
    trainer_max_hold_s: float = Field(default=60.0, gt=0)
    # The live churn model's band: below this prequential ROC AUC, or above this calibration
    # error, once its window holds this many matured labels, a model-quality alert goes out.
    model_min_roc_auc: float = Field(default=0.6, ge=0, le=1)
    model_max_calibration_error: float = Field(default=0.1, ge=0, le=1)
    model_quality_min_labels: int = Field(default=1_000, ge=1)

    def rocksdb_options(self) -> RocksDBSizes:
        """faust's RocksDB options per partition database: small write buffers and block cache,
        since the decoded states in front of it are the cache that matters (faust's defaults
        let each of a worker's databases take up to 2 GiB of block cache and 192 MB of
        write buffers)."""
        return {
            "write_buffer_size": 16 * 2**20,
            "max_write_buffer_number": 2,
            "block_cache_size": 32 * 2**20,
            "target_file_size_base": 64 * 2**20,
        }

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def staging_path(self) -> Path:
        """Where a worker's processes stage inserts for embedded ClickHouse to read."""
        return self.data_path / "staging"

    @property
    def clickhouse_url(self) -> str:
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{self.data_path / 'clickhouse'}"

    @property
    def reader_password(self) -> str:
        """The read-only user's password on a server."""
        if self.clickhouse_reader_password:
            return self.clickhouse_reader_password.get_secret_value()
        return unquote(urlsplit(self.clickhouse_url).password or "")

    @property
    def clickhouse_reader_url(self) -> str:
        """Where analysts' queries connect: the data itself (chDB), or the read-only user (server).

        >>> Settings(clickhouse_dsn="http://crm360:s%40cret@ch:8123/crm360").clickhouse_reader_url
        'http://crm360_reader:s%40cret@ch:8123/crm360'
        """
        if self.embedded_clickhouse:
            return self.clickhouse_url
        url = urlsplit(self.clickhouse_url)
        port = f":{url.port}" if url.port else ""
        netloc = f"{READER}:{quote(self.reader_password, safe='')}@{url.hostname}{port}"
        return urlunsplit(url._replace(netloc=netloc))

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url.startswith("chdb://")

    @property
    def processes(self) -> int:
        """Worker processes to run: the setting, or one per CPU core up to the partitions."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return self.worker_processes or max(1, min(cores, self.partitions))

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def key(self) -> str | None:
        """The API key as text, None when there is none.

        >>> Settings(api_key="s3cret").key, Settings().key
        ('s3cret', None)
        """
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def role(self) -> Role:
        """A helper is told its main process's address (``main_url``); the main process is not.

        >>> Settings().role, Settings(main_url="http://127.0.0.1:6066").role
        (<Role.MAIN: 'main'>, <Role.HELPER: 'helper'>)
        """
        return Role.MAIN if self.main_url is None else Role.HELPER

    def environment(self, *names: str, **values: object) -> dict[str, str]:
        """The ``CRM360_*`` variables that give a child process the fields ``names`` as set
        here, and ``values``.

        >>> Settings(partitions=8, data_dir="/tmp/x").environment("partitions", "data_dir", web_port=7000)
        {'CRM360_PARTITIONS': '8', 'CRM360_DATA_DIR': '/tmp/x', 'CRM360_WEB_PORT': '7000'}
        """
        given = {name: self.data_path if name == "data_dir" else getattr(self, name) for name in names} | values
        return {
            f"CRM360_{name.upper()}": value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            for name, value in given.items()
        }

    def feature_config(self) -> FeatureConfig:
        return FeatureConfig(
            allowed_lateness_days=self.allowed_lateness_days,
            engagement_half_life_days=self.engagement_half_life_days,
            new_customer_days=self.new_customer_days,
            at_risk_days=self.at_risk_days,
            churn_days=self.churn_days,
            max_future_s=self.max_future_s,
        )

    @field_validator("identifier_kinds")
    @classmethod
    def _accounts_are_a_kind(cls, kinds: list[str]) -> list[str]:
        if "customer_id" not in kinds:
            raise ValueError("CRM360_IDENTIFIER_KINDS must name customer_id (every event's customer_id is one)")
        return kinds

    def identity_config(self) -> IdentityConfig:
        return IdentityConfig(
            kinds=tuple(self.identifier_kinds),
            unique_kinds=frozenset(self.unique_identifier_kinds),
            max_identifiers=self.max_identifiers,
        )

    def quality_band(self) -> QualityBand:
        return QualityBand(self.model_min_roc_auc, self.model_max_calibration_error, self.model_quality_min_labels)

    def models_config(self) -> ModelConfig:
        return ModelConfig(
            churn_horizon_days=self.churn_horizon_days,
            snapshot_every_days=self.snapshot_every_days,
            segments=self.segments,
            segment_warmup=self.segment_warmup,
            alert_threshold=self.alert_threshold,
            alert_rearm_below=self.alert_rearm_below,
            alert_holdout_share=self.alert_holdout_share,
            alert_cooldown_days=self.alert_cooldown_days,
            alert_value_tiers=frozenset(self.alert_value_tiers),
            clv_horizon_days=self.clv_horizon_days,
        )
