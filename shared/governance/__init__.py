"""What a domain promises about its data and how it keeps the promise: quality runs of the
declared checks (`quality`, `quality_routes`), ODCS data contracts (`contracts`), and live
metadata for the catalogue (`metadata`)."""
