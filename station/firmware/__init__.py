"""Firmware update: a release of `station` itself, downloaded, checked and installed into a venv of its own.

`release` builds and signs the file an operator uploads to the CSMS; `signature` checks a downloaded file against its
signing certificate and the ManufacturerRootCertificate (pure: bytes in, verdict out); `download` fetches it over
HTTP(S) with the CSMS's retries; `releases` owns the releases folder (versioned venvs, the `current` / `previous`
links, the pending-install record, boot counting and rollback); `update` runs one UpdateFirmware from request to
restart and says each step to the CSMS through the store's outbox. Nothing here knows an OCPP version's wire format:
the adapters translate.
"""
