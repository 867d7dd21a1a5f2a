"""`Engines`: the models of one bundle, loaded once and shared by every stream (which model serves which role)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeomni.bundle import VerifiedBundle
from edgeomni.config import RunConfig
from edgeomni.engines.asr import Asr
from edgeomni.engines.asr_families import open_asr
from edgeomni.engines.faces import FaceDetector
from edgeomni.engines.labeller import ImageLabeller
from edgeomni.engines.ocr import TextReader
from edgeomni.engines.session import EngineProfile
from edgeomni.engines.vad import SileroVad
from edgeomni.vision.analyzer import VisionEngines

OCR_ROLES = ("ocr-detector", "ocr-recognizer", "ocr-dictionary")


@dataclass
class Engines:
    """A bundle's engines as the config asks for them; a model the config turns off, or the bundle lacks, is None.
    Per-stream state (VAD state, endpointing, agreement, scene state) lives in the heads, never here."""

    bundle: VerifiedBundle
    profile: EngineProfile
    asr: Asr | None
    vad: SileroVad | None
    vision: VisionEngines

    @classmethod
    def load(cls, bundle: VerifiedBundle, config: RunConfig) -> Engines:
        profile = EngineProfile(tuple(config.engine.providers), config.engine.threads_per_engine,
                                config.engine.backend)
        manifest, visual = bundle.manifest, config.visual
        speech = config.speech.enabled
        asr = open_asr(bundle, profile) if speech else None
        vad = SileroVad(bundle, profile) if speech else None
        labeller_role = "image-labeller" if visual.labeller == "int8" else "image-labeller-fp32"
        labeller = ImageLabeller(bundle, profile, labeller_role) if visual.enabled and manifest.has_role(
            labeller_role) else None
        faces = FaceDetector(bundle, profile) if visual.enabled and visual.faces and manifest.has_role(
            "face-detector") else None
        wants_ocr = visual.enabled and visual.ocr and all(manifest.has_role(r) for r in OCR_ROLES)
        reader = TextReader(bundle, profile) if wants_ocr else None
        return cls(bundle, profile, asr, vad, VisionEngines(labeller, faces, reader))

    @property
    def labeller(self) -> ImageLabeller | None:
        return self.vision.labeller

    @property
    def backends(self) -> dict[str, dict[str, Any]]:
        """Per role with a choice of backend (TensorRT engine/EP, CUDA, CPU): what runs and why others were
        skipped; reported in the `start` record."""
        reader = self.vision.reader
        engines = [self.vision.labeller, self.asr, *((reader.detector, reader.recognizer) if reader else ())]
        choices = [choice for engine in engines if (choice := getattr(engine, "backend", None)) is not None]
        return {c.role: {**c.to_dict(), "summary": c.summary} for c in choices}

    @property
    def tag(self) -> str:
        """`name@version` of the bundle, stamped on every caption event (OTA makes it change mid-stream)."""
        return f"{self.bundle.manifest.name}@{self.bundle.manifest.version}"

    def same_tokenizer(self, other: Engines) -> bool:
        """Whether the speech context (the previous utterance's tokens) still means the same after a switch:
        the same ASR family with a byte-identical tokenizer file."""
        if self.asr is None or other.asr is None or self.asr.tokenizer_role != other.asr.tokenizer_role:
            return False
        role = self.asr.tokenizer_role
        return self.bundle.manifest.by_role(role).sha256 == other.bundle.manifest.by_role(role).sha256


__all__ = ["Engines"]
