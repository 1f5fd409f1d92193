"""Simulated EV-side equipment for tests and demos: a car (`car.py`) and the control socket through which a person or
a test drives a simulated charge controller and its car (`control.py`). Never imported by production wiring."""
