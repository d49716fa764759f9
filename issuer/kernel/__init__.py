"""The security kernel: one implementation of each check that both sides rely on.

The kernel imports nothing from the server, the gateway or the SDKs: they all
import it. Today it holds the strict JSON decoder; the JOSE, fetch and cache
primitives join it as they are unified.
"""
