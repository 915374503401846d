"""Reliability tests."""
