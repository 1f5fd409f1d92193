"""Transaction core: connectors and transactions as a plain state machine, no I/O."""
