"""Fabric tests."""
