"""Export recipes: one YAML file names the source model, the steps, the data and the gates.

Every section is a dataclass that validates itself and names the offending field (`source.kind: expected
one of ..., got 'tf'`), so a typo in a recipe fails in the first second instead of after a long export.
Flags override recipe fields with dotted paths (`--set quantize.method=entropy`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeomni.errors import ExportError
from edgeomni.export.whisper.distill_spec import DistillSpec
from edgeomni.typed import build, check, one_of

SOURCE_KINDS = ("onnx", "pytorch", "huggingface", "ctranslate2")
TASKS = ("image-classification", "encoder", "speech-recognition", "ocr")
QUANT_MODES = ("static", "dynamic")
METHODS = ("minmax", "entropy", "percentile")
ACTIVATIONS = ("int8-symmetric", "uint8-asymmetric")
# metric -> task; wer_delta is bounded by gate.max_delta (INT8 WER - FP32 WER), the others by gate.min
METRICS = {"top1_agreement": "image-classification", "cosine": "encoder", "wer_delta": "speech-recognition",
           "text_unchanged": "ocr"}
STEPS = ("distill", "export", "quantize", "finetune", "gate")
TARGETS = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


@dataclass
class SourceSpec:
    kind: str = "onnx"
    path: str = ""  # onnx file, Hugging Face / CTranslate2 checkpoint directory, or (pytorch) weights file
    components: dict[str, str] = field(default_factory=dict)  # multi-model sources (OCR): name -> onnx file
    factory: str = ""  # pytorch: "package.module:function" returning an nn.Module; gets the weights path
    input_name: str = "input"
    input_shape: list[int] = field(default_factory=lambda: [1, 3, 224, 224])

    def validate(self, where: str) -> None:
        one_of(self.kind, SOURCE_KINDS, f"{where}.kind", error=ExportError)
        check(bool(self.path) or bool(self.components), f"{where}.path",
              "a file or directory (weights are never downloaded)", self.path, error=ExportError)
        if self.kind == "pytorch":
            check(":" in self.factory, f"{where}.factory", "'package.module:function'", self.factory, error=ExportError)
        check(len(self.input_shape) >= 2 and all(isinstance(d, int) and d > 0 for d in self.input_shape),
              f"{where}.input_shape", "a list of positive ints (batch first)", self.input_shape, error=ExportError)


@dataclass
class DataSpec:
    """Media to calibrate or to hold out. Images: a folder, `skimage:calibration|heldout` (real photos that ship
    with scikit-image) or `slides:calibration|heldout` (generated slides, OCR). Audio: a folder of audio files,
    `trainer:DIR` (what `edgeomni trainer build-sets` wrote), `speechset` (the bench speech set, with its
    reference texts) or `builtin` (espeak-ng voices + package-shipped speech). `photos:calibration|heldout`:
    the larger real-photo pool of edgeomni/datasets/photo_sets.py (object photos; held-out ones are never augmented).
    Sub-folders are strata: sampling takes the same share from each, seeded."""

    images: str = ""
    audio: str = ""
    count: int = 48
    seed: int = 1234

    def validate(self, where: str) -> None:
        check(bool(self.images) != bool(self.audio), f"{where}.images or {where}.audio",
              "exactly one of them (an image folder/skimage:/slides:, or an audio folder/trainer:/speechset/builtin)",
              self.images or self.audio or "neither", error=ExportError)
        check(1 <= self.count <= 100_000, f"{where}.count", "1..100000", self.count, error=ExportError)


@dataclass
class QuantizeSpec:
    mode: str = "static"
    method: str = "percentile"
    percentile: float = 99.999
    activations: str = "int8-symmetric"
    per_channel: bool = True

    def validate(self, where: str) -> None:
        one_of(self.mode, QUANT_MODES, f"{where}.mode", error=ExportError)
        one_of(self.method, METHODS, f"{where}.method", error=ExportError)
        one_of(self.activations, ACTIVATIONS, f"{where}.activations", error=ExportError)
        check(90.0 <= self.percentile <= 100.0, f"{where}.percentile", "90..100", self.percentile, error=ExportError)


@dataclass
class FinetuneSpec:
    """steps [..., quantize, finetune, gate] (image classifiers, static INT8): quantization-aware fine-tuning
    with distillation to the FP32 model (edgeomni/export/qat.py). Needs torch (the export extra)."""

    steps: int = 300
    batch: int = 16
    lr: float = 0.02  # weight updates in units of the int8 grid step (Adam, cosine schedule)
    temperature: float = 1.0
    views: int = 512  # augmented views of the calibration photos, trained on with the calibration inputs
    cutouts: str = ""  # "photos:calibration": every other view gets one of those cut-out photos pasted in
    images: str = ""  # more unlabeled training images: trainer:DIR (its distillation frames) or a folder
    seed: int = 1234

    def validate(self, where: str) -> None:
        check(1 <= self.steps <= 100_000, f"{where}.steps", "1..100000", self.steps, error=ExportError)
        check(1 <= self.batch <= 1024, f"{where}.batch", "1..1024", self.batch, error=ExportError)
        check(0.0 < self.lr <= 10.0, f"{where}.lr", "in (0, 10]", self.lr, error=ExportError)
        check(0.1 <= self.temperature <= 20.0, f"{where}.temperature", "0.1..20", self.temperature, error=ExportError)
        check(0 <= self.views <= 100_000, f"{where}.views", "0..100000", self.views, error=ExportError)
        check(self.cutouts in ("", "photos:calibration"), f"{where}.cutouts",
              "'' or 'photos:calibration' (the held-out side is never trained on)", self.cutouts, error=ExportError)


@dataclass
class GateSpec:
    metric: str = "top1_agreement"
    min: float = 0.9
    max_delta: float = 0.01  # wer_delta: how much worse than FP32 INT8 may be (0.01 = one WER point)
    min_size_ratio: float = 0.0  # FP32 size / INT8 size the bundle must reach (0 = not gated)
    exclude_sensitive: bool = True  # keep the worst nodes in FP32, one round at a time, until the gate holds
    max_excluded: int = 8

    def validate(self, where: str) -> None:
        one_of(self.metric, tuple(METRICS), f"{where}.metric", error=ExportError)
        check(0.0 <= self.min <= 1.0, f"{where}.min", "0..1", self.min, error=ExportError)
        check(0.0 <= self.max_delta <= 1.0, f"{where}.max_delta", "0..1", self.max_delta, error=ExportError)
        check(0.0 <= self.min_size_ratio <= 100.0, f"{where}.min_size_ratio", "0..100", self.min_size_ratio,
              error=ExportError)
        check(0 <= self.max_excluded <= 200, f"{where}.max_excluded", "0..200", self.max_excluded, error=ExportError)


@dataclass
class Recipe:
    name: str = ""
    version: str = "1"
    task: str = "image-classification"
    steps: list[str] = field(default_factory=lambda: ["export", "quantize", "gate"])
    source: SourceSpec = field(default_factory=SourceSpec)
    calibration: DataSpec = field(default_factory=DataSpec)
    heldout: DataSpec = field(default_factory=lambda: DataSpec(count=64))
    quantize: QuantizeSpec = field(default_factory=QuantizeSpec)
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)
    gate: GateSpec = field(default_factory=GateSpec)
    targets: list[str] = field(default_factory=lambda: ["onnxruntime-cpu"])
    labels: str = ""  # image-classification: class names, one per line (copied into the bundle)
    distill: dict[str, Any] = field(default_factory=dict)  # steps [distill, ...]: DistillSpec fields (Whisper)
    peer: bool = False  # speech-recognition: also score faster-whisper (int8) on the held-out set
    latency_runs: int = 64
    base_dir: Path = field(default=Path("."), repr=False, compare=False)  # relative paths resolve from here

    def validate(self) -> Recipe:
        check(bool(self.name) and self.name.replace("-", "").replace("_", "").isalnum(), "name",
              "letters, digits, - and _", self.name, error=ExportError)
        one_of(self.task, TASKS, "task", error=ExportError)
        for i, step in enumerate(self.steps):
            one_of(step, STEPS, f"steps[{i}]", error=ExportError)
        check("distill" not in self.steps or self.task == "speech-recognition", "steps",
              "distill only for task speech-recognition (the Whisper student)", self.steps, error=ExportError)
        check("finetune" not in self.steps or (self.task == "image-classification" and
                                               self.quantize.mode == "static"), "steps",
              "finetune only for task image-classification with quantize.mode static", self.steps, error=ExportError)
        check(len(set(self.steps)) == len(self.steps) and [s for s in STEPS if s in self.steps] == self.steps,
              "steps", f"each at most once, in the order {list(STEPS)}", self.steps, error=ExportError)
        self.source.validate("source")
        self.calibration.validate("calibration")
        self.heldout.validate("heldout")
        media = "audio" if self.task == "speech-recognition" else "images"
        for where, spec in (("calibration", self.calibration), ("heldout", self.heldout)):
            check(bool(getattr(spec, media)), f"{where}.{media}", f"{media} for task {self.task!r}",
                  spec.images or spec.audio, error=ExportError)
        self.quantize.validate("quantize")
        self.finetune.validate("finetune")
        self.gate.validate("gate")
        check(METRICS[self.gate.metric] == self.task, "gate.metric",
              f"a metric for task {self.task!r} ({[m for m, t in METRICS.items() if t == self.task]})",
              self.gate.metric, error=ExportError)
        check(bool(self.targets), "targets", f"a non-empty list of {TARGETS}", self.targets, error=ExportError)
        for i, target in enumerate(self.targets):
            one_of(target, TARGETS, f"targets[{i}]", error=ExportError)
        check(1 <= self.latency_runs <= 10_000, "latency_runs", "1..10000", self.latency_runs, error=ExportError)
        check(not self.distill or "distill" in self.steps, "distill", "no settings unless steps has distill",
              self.distill, error=ExportError)
        if "distill" in self.steps:
            self.distill_spec()
        return self

    def distill_spec(self) -> DistillSpec:
        """The `distill:` section as the trainer's DistillSpec (validated; unknown fields named)."""
        known = {f.name for f in dataclasses.fields(DistillSpec)}
        unknown = sorted(set(self.distill) - known)
        if unknown:
            raise ExportError(f"distill: unknown field(s) {unknown} (known: {sorted(known)})")
        values = dict(self.distill)
        for name in ("init_layers", "windows_s"):  # YAML lists -> the tuples the spec holds
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        if values.get("cache_dir") is not None:
            values["cache_dir"] = self.resolve(str(values["cache_dir"]))
        audio = values.get("audio")
        if isinstance(audio, str) and audio:  # trainer:DIR or DIR, relative to the recipe like every path
            trainer = audio.startswith("trainer:")
            folder = self.resolve(audio.removeprefix("trainer:"))
            values["audio"] = f"trainer:{folder}" if trainer else str(folder)
        try:
            spec = DistillSpec(**values)
        except TypeError as exc:
            raise ExportError(f"distill: {exc}") from None
        spec.validate("distill")
        return spec

    def resolve(self, path: str) -> Path:
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else (self.base_dir / candidate)

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw.pop("base_dir")
        return raw

    @classmethod
    def load(cls, path: Path, overrides: list[str] | None = None) -> Recipe:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ExportError(f"recipe {path}: no such file")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ExportError(f"recipe {path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ExportError(f"recipe {path}: expected a mapping of fields, got {type(raw).__name__}")
        for override in overrides or []:
            _apply_override(raw, override)
        recipe = build(cls, raw, f"recipe {path.name}", ExportError, skip=("base_dir",))
        recipe.base_dir = path.parent.resolve()
        try:
            return recipe.validate()
        except ExportError as exc:
            raise ExportError(f"recipe {path.name}: {exc}") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    import yaml

    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ExportError(f"--set {override!r}: expected FIELD=VALUE, e.g. quantize.method=entropy")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ExportError(f"--set {override!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(text)


__all__ = ["DataSpec", "GateSpec", "QuantizeSpec", "Recipe", "SourceSpec"]
