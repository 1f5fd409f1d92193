"""Simulated charge controllers, for the tests and for trying the daemon by hand; the daemon's production wiring
imports none of them."""
