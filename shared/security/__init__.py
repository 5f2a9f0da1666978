"""Who is calling and what they may see: bearer tokens and scopes (`auth`), and the
pseudonymous join key that replaces an email across domains (`pseudonym`)."""
