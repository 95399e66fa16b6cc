"""Pieces every part of robustad shares (registry, closed vocabularies, profiles, seeding, files).

This package imports nothing of `robustad.bench`, `robustad.attacks`, `robustad.methods` or
`robustad.datasets`: they all import it, never the other way round.
"""
