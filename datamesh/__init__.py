"""The DataMesh Python client: `Mesh` reads data products and cross-domain metrics as pandas
DataFrames (docs/client.md); every failure is a `DataMeshError`."""

from datamesh.client import DataMeshError, Mesh

__all__ = ["DataMeshError", "Mesh"]
