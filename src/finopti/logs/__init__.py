"""The log pipeline: a Promtail-style collector (collector.py) tails `$FINOPTI_HOME/logs/*.log` and pushes
to an embedded Loki-compatible store (store.py, served by finopti.services.logstore). See docs/logs.md."""
