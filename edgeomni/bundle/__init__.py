"""Model bundles: a directory with manifest.json plus engine files, verified before anything loads."""

from edgeomni.bundle.manifest import FORMAT, Component, Manifest, StateSpec, TensorSpec
from edgeomni.bundle.verify import VerifiedBundle, sha256_of, verify_bundle

__all__ = ["FORMAT", "Component", "Manifest", "StateSpec", "TensorSpec", "VerifiedBundle", "sha256_of",
           "verify_bundle"]
