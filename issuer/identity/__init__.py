"""Trusted identity providers: their keys, and the verification of the tokens they sign."""
