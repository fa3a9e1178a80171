"""The Prometheus exporter (docs/prometheus.md), one idea per module:

- `families.py`: a `MonitorSnapshot` as Prometheus metric families, a pure function.
- `exporter.py`: the `/metrics` endpoint: its listen address, the HTTP server and the collector
  that reads one snapshot per scrape.

This file imports nothing, so `rtmon.prometheus.families` loads without the HTTP server.
"""
