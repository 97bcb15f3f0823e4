"""The log store service (the embedded Loki): see app.py."""
