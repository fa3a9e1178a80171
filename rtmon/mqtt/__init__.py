"""The MQTT metrics feed (docs/mqtt.md), one idea per module:

- `address.py`: where and how to reach the broker (URL, TLS, credentials, reconnect pace) and
  the start-up checks (`validate`).
- `topics.py`: every topic name, in one place.
- `payloads.py`: the schema-v2 JSON payloads, pure functions of a `MonitorSnapshot`.
- `discovery.py`: Home Assistant's device config, pure functions of a snapshot.
- `publisher.py`: `MetricsPublisher`, the async connection loop the pipeline never waits on.

Imports go one way, so there is no cycle: `topics` and `payloads` import nothing of this
package, `address` imports `topics`, `discovery` imports `topics` and `payloads`, and only
`publisher` imports them all.
This file imports nothing: importing one module (e.g. `rtmon.mqtt.payloads` in `rtmon watch`)
does not load the others.
"""
