"""OCPP side: the WebSocket connection, one adapter per OCPP version, signed-value encoding."""
