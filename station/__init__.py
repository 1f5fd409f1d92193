"""station: the controller service of an EV charging station.

Speaks OCPP to the operator's CSMS, drives the fiscal (Eichrecht) meter over Modbus RTU, and forwards the meter's
signed OCMF records as signed meter values. See docs/architecture.md for the shape of the code.
"""

__version__ = "0.1.0"
