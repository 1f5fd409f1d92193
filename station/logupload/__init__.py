"""Log upload to the CSMS (OCPP 1.6 GetDiagnostics and GetLog, 2.0.1 GetLog, use case N01): what the archive holds
(archive), how it is sent (transfer), and the one upload at a time with its queued statuses (service)."""
