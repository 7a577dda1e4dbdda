"""Generate PII text, train the name/address tagger and write its artifact for keel.guard."""
