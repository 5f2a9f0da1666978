"""The mesh: cross-domain metrics joined from the domains' published data products."""
