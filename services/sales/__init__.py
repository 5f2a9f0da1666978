"""Sales domain: customers, products, orders and revenue, published as data products."""
