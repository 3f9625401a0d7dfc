"""Stub of NVlabs' torch_utils (persistence, misc)."""
