"""Image labels from the bundle's classifier (MobileNetV2 ImageNet, INT8 by default)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeomni.bundle import VerifiedBundle
from edgeomni.engines.backend import open_engine
from edgeomni.engines.image_preprocess import preprocess_rgb
from edgeomni.engines.session import EngineProfile


@dataclass(frozen=True, slots=True)
class Label:
    name: str
    score: float


class ImageLabeller:
    def __init__(self, bundle: VerifiedBundle, profile: EngineProfile | None = None, role: str = "image-labeller"):
        component = bundle.manifest.by_role(role)
        params = component.preprocess
        self.size = int(params.get("size", 224))
        self._mean = tuple(params.get("mean", (0.485, 0.456, 0.406)))
        self._std = tuple(params.get("std", (0.229, 0.224, 0.225)))
        # TensorRT engine -> TensorRT EP -> CUDA EP -> CPU; `backend` says which runs and why the others did not
        self._session, self.backend = open_engine(bundle, role, profile)
        self._input = self._session.get_inputs()[0].name
        self.names = bundle.role_file("image-labels").read_text().splitlines()

    def features(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities for one RGB frame (softmax over the logits)."""
        batch = preprocess_rgb(image, self.size, self._mean, self._std)
        logits = self._session.run(None, {self._input: batch})[0][0]
        shifted = np.exp(logits - logits.max())
        return shifted / shifted.sum()

    def top(self, probs: np.ndarray, k: int = 3) -> list[Label]:
        best = np.argsort(probs)[::-1][:k]
        return [Label(self.names[i], float(probs[i])) for i in best]

    def __call__(self, image: np.ndarray, k: int = 3) -> list[Label]:
        return self.top(self.features(image), k)
