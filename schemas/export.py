"""Export the event contract as JSON Schema files, for producers in any language."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.alerts import ChurnAlert
from schemas.audiences import Audience, AudienceEvent
from schemas.events import EVENT_TYPES, event_json_schema
from schemas.rows import IdentityMerge


def export_json_schemas(directory: Path) -> list[Path]:
    """Write ``event.schema.json`` (any event), one ``<type>.schema.json`` per type,
    ``churn_alert.schema.json``, ``audience_event.schema.json`` and ``identity_merge.schema.json``
    (what subscribers of ``churn-alerts``, ``audience-updates`` and ``identity-merges``
    receive), and ``audience.schema.json`` (a definition, as ``/audiences`` takes it)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    documents = {"event": event_json_schema()} | {
        name: model.model_json_schema() for name, model in EVENT_TYPES.items()
    }
    documents["churn_alert"] = ChurnAlert.model_json_schema()
    documents["identity_merge"] = IdentityMerge.model_json_schema(mode="serialization")
    documents["audience_event"] = AudienceEvent.model_json_schema(mode="serialization")
    documents["audience"] = Audience.model_json_schema()
    for name, document in documents.items():
        document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **document}
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
