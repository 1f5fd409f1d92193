"""Smart charging: charging profiles (`profiles.py`), the book of installed ones and the rules for installing and
clearing them (`book.py`), and the composite schedule, a pure function of the profiles and a moment
(`composite.py`). No I/O and no clock reads here: the runtime (`station/runtime/smart_charging.py`) stores the book,
reads the clock and hands the limits to the charge controllers."""
