"""Synthetic relay captures with known content and chosen impairments (`skymix synth`)."""

from .generate import Impairments, SynthParticipant, SynthResult, preset, synthesize
from .pcapwrite import PcapWriter

__all__ = ["Impairments", "PcapWriter", "SynthParticipant", "SynthResult", "preset", "synthesize"]
