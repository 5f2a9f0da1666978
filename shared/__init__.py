"""The data-product framework every DataMesh service is built from."""
