"""For the systems around crm360: publishing events, subscribing to alerts, querying the worker."""
