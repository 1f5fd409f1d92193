"""Local technician interface: read-only status, meter checks, transactions."""
