"""Tests of the verifier SDK (issuer.sdk.verifier)."""
