"""Simulated EV-side equipment for tests, demos and trying the daemon by hand: a car (`car.py`), the control socket
through which a person or a test drives a simulated charge controller and its car (`control.py`), and an OpenEVSE
RAPI simulator (`openevse.py`). The daemon's production wiring imports none of them."""
