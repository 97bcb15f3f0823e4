"""Policy service: ext_authz for the gateway and an OPA-compatible data API."""
