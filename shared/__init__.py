"""Frozen-teacher feature injection for PET (see README)."""
