"""SuperHF."""
