"""Helpers every stage may use: running external programs, atomic outputs, units."""
