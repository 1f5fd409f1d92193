"""Modbus register codecs: how text, bytes and 32-bit integers lie in 16-bit registers, and how many registers one
frame may carry. Shared by the drivers and the simulators; pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Sequence

MAX_READ_REGISTERS = 125  # Modbus application protocol limit for FC03/FC04
MAX_WRITE_REGISTERS = 123  # ... and for FC16


def regs_to_str(regs: Sequence[int], length: int | None = None) -> str:
    """ASCII, two characters per register, high byte first; NUL padding removed."""
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    if length is not None:
        raw = raw[:length]
    return raw.split(b"\x00", 1)[0].decode("ascii", errors="replace")  # garbage shows as U+FFFD, never raises


def str_to_regs(text: str, n_regs: int | None = None) -> list[int]:
    raw = text.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    regs = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    if n_regs is not None:
        if len(regs) > n_regs:
            raise ValueError(f"text of {len(raw)} bytes does not fit {n_regs} registers")
        regs += [0] * (n_regs - len(regs))
    return regs


def regs_to_bytes(regs: Sequence[int], length: int | None = None) -> bytes:
    raw = b"".join(r.to_bytes(2, "big") for r in regs)
    return raw if length is None else raw[:length]


def bytes_to_regs(raw: bytes) -> list[int]:
    if len(raw) % 2:
        raw += b"\x00"
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def u32(regs: Sequence[int]) -> int:
    return (regs[0] << 16) | regs[1]


def to_u32(value: int) -> list[int]:
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def s32(regs: Sequence[int]) -> int:
    v = u32(regs)
    return v - (1 << 32) if v & 0x80000000 else v


def to_s32(value: int) -> list[int]:
    return to_u32(value & 0xFFFFFFFF)
