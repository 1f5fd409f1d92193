"""Card readers at the station: the contract (`interface.py`) and one file per reader type."""
