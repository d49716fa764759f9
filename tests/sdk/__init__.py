"""Tests of the client-side SDKs (issuer.sdk)."""
