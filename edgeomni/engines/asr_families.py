"""The ASR families a bundle can ship, and the one that captions with it. A new family implements
`edgeomni.engines.asr.Asr`, has a `fits(manifest)` test on the roles it needs, and is listed in `ASR_FAMILIES`."""

from __future__ import annotations

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.asr import Asr
from edgeomni.engines.moonshine_asr import MoonshineAsr
from edgeomni.engines.session import EngineProfile
from edgeomni.engines.whisper_asr import WhisperAsr
from edgeomni.errors import BundleError

# Tried in order: the first family whose roles the bundle has is used.
ASR_FAMILIES: tuple[type[MoonshineAsr] | type[WhisperAsr], ...] = (WhisperAsr, MoonshineAsr)


def open_asr(bundle: VerifiedBundle, profile: EngineProfile | None = None) -> Asr:
    for family in ASR_FAMILIES:
        if family.fits(bundle.manifest):
            return family(bundle, profile)
    raise BundleError(f"bundle {bundle.path}: no speech-recognition model (roles of a family: "
                      f"{', '.join(f.family for f in ASR_FAMILIES)}) — run with --no-speech or use a bundle with one")


def has_asr(bundle: VerifiedBundle) -> bool:
    return any(family.fits(bundle.manifest) for family in ASR_FAMILIES)


__all__ = ["ASR_FAMILIES", "has_asr", "open_asr"]
