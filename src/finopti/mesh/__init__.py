"""The mesh: `mesh.yaml`'s typed model and one pure renderer per engine."""

from finopti.mesh.model import MeshSpec, Route, Service, load_mesh

__all__ = ["MeshSpec", "Route", "Service", "load_mesh"]
