"""The analysts' side: panels over ClickHouse, the live dashboard, the report and the Grafana dashboard."""
