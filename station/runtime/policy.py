"""What the runtime asks of the station's configuration while it runs, read at every use so that a change by the CSMS
takes effect at once. The OCPP settings implement it (`station.ocpp.settings.SettingsPolicy`); tests use `Fixed`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class RuntimePolicy(Protocol):
    def sample_interval(self) -> int:
        """MeterValueSampleInterval / SampledDataCtrlr.TxUpdatedInterval in s (0: off)."""
        ...

    def aligned_interval(self) -> int:
        """ClockAlignedDataInterval / AlignedDataCtrlr.Interval in s (0: off)."""
        ...

    def sign_aligned(self) -> bool:
        """AlignedDataSignReadings: clock-aligned readings carry the meter's latest signed reading."""
        ...

    def ended_interval(self) -> int:
        """2.0.1 SampledDataCtrlr.TxEndedInterval: readings kept for TransactionEvent(Ended) only (0: none)."""
        ...

    def stop_on_invalid_id(self) -> bool:
        """1.6 StopTransactionOnInvalidId / 2.0.1 TxCtrlr.StopTxOnInvalidId."""
        ...

    def stop_on_ev_disconnect(self) -> bool:
        """1.6 StopTransactionOnEVSideDisconnect / 2.0.1 TxCtrlr.StopTxOnEVSideDisconnect."""
        ...

    def unlock_on_ev_disconnect(self) -> bool:
        """1.6 UnlockConnectorOnEVSideDisconnect / 2.0.1 OCPPCommCtrlr.UnlockOnEVSideDisconnect."""
        ...

    def connection_timeout(self) -> int:
        """1.6 ConnectionTimeOut / 2.0.1 TxCtrlr.EVConnectionTimeOut in s: from authorization to plug-in, or from
        plug-in to authorization."""
        ...

    def start_on_authorization(self) -> bool:
        """2.0.1 TxStartPoint Authorized: the transaction starts at the authorization, before the car is plugged."""
        ...

    def stop_when_energy_stops(self) -> bool:
        """2.0.1 TxStopPoint EnergyTransfer: the transaction ends when the energy transfer stops."""
        ...

    def limit_change_significance(self) -> float:
        """2.0.1 SmartChargingCtrlr.LimitChangeSignificance in %: a charging limit that changes by less is not told
        to the CSMS (TransactionEvent ChargingRateChanged)."""
        ...


@dataclass
class Fixed:
    """A policy of fixed values."""

    sample: int = 0
    aligned: int = 0
    sign: bool = False
    ended: int = 0
    stop_invalid: bool = True
    stop_ev_disconnect: bool = True
    unlock_ev_disconnect: bool = True
    connection_timeout_s: int = 60
    start_authorized: bool = False
    stop_energy: bool = False
    significance: float = 10.0

    def sample_interval(self) -> int:
        return self.sample

    def aligned_interval(self) -> int:
        return self.aligned

    def sign_aligned(self) -> bool:
        return self.sign

    def ended_interval(self) -> int:
        return self.ended

    def stop_on_invalid_id(self) -> bool:
        return self.stop_invalid

    def stop_on_ev_disconnect(self) -> bool:
        return self.stop_ev_disconnect

    def unlock_on_ev_disconnect(self) -> bool:
        return self.unlock_ev_disconnect

    def connection_timeout(self) -> int:
        return self.connection_timeout_s

    def start_on_authorization(self) -> bool:
        return self.start_authorized

    def stop_when_energy_stops(self) -> bool:
        return self.stop_energy

    def limit_change_significance(self) -> float:
        return self.significance
