"""Plumbing for tests/sdk/test_end_to_end.py: real servers on 127.0.0.1 and request recorders."""
