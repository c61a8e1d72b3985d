"""Cluster launchers."""
