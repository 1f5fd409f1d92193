"""Meter simulator: Modbus RTU servers that behave like the supported meters."""
