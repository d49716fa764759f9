"""Tests of the exchange client SDK (issuer.sdk.client)."""
