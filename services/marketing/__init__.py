"""Marketing domain: campaigns, leads, campaign metrics and website traffic as data products."""
