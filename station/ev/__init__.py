"""The EV side of an EVSE: the charge controller (control pilot, relay, connector lock) behind one small contract
(`interface.py`), its drivers (one file per controller) and their simulators (`sim/`)."""
