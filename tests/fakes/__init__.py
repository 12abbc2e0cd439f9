"""Fake image hosts that check signatures the way the real ones document them (see fakehost.py)."""
