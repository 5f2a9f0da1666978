"""What a domain declares: its data products and their columns (`products`), the checks each
product's data must pass (`checks`, one module per kind, each with the SQL that measures it)
and the writes its tables accept (`writes`). Declarations only; the rest of the framework
serves them."""
