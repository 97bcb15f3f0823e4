"""Test doubles that run as real platform services (used by the traffic-control tests and drills)."""
