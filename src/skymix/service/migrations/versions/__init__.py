"""One module per schema version, in order; a version is never edited once released."""
