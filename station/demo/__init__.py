"""The self-contained demo: a local CSMS, the simulator and the daemon on one machine."""
