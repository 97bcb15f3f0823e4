"""FinOptiAgents: a FinOps assistant built as AI-agent microservices behind a strict service mesh."""

__version__ = "0.1.0"
