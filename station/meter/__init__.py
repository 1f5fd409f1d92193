"""Meter side: the meter interface, one driver per model, the Modbus link, OCMF, and the simulator."""
