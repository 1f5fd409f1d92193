"""Meter side: the meter interface, one driver per model, OCMF, and the simulator. The Modbus bus the drivers talk
through is station.bus."""
