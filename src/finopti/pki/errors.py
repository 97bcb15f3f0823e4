"""Errors raised by the mesh PKI."""


class PkiError(Exception):
    """The PKI directory holds something unusable (missing, corrupt or expired CA material)."""
