"""Fakes and builders shared by test modules (tests never import each other)."""
