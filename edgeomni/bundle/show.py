"""Human-readable view of a bundle manifest (`edgeomni bundle show`)."""

from __future__ import annotations

from edgeomni.bundle.manifest import Manifest, TensorSpec


def _tensors(specs: list[TensorSpec], limit: int = 4) -> str:
    # Decoders list dozens of KV-cache tensors: show the first few and count the rest.
    shown = [f"{t.name}[{','.join(str(d) for d in t.shape)}]:{t.dtype}" for t in specs[:limit]]
    if len(specs) > limit:
        shown.append(f"… (+{len(specs) - limit} more)")
    return ", ".join(shown)


def format_manifest(manifest: Manifest) -> str:
    total = sum(c.size for c in manifest.components.values())
    lines = [f"bundle {manifest.name} {manifest.version} ({manifest.format}), created {manifest.created}",
             f"{len(manifest.components)} components, {total / 1e6:.1f} MB"]
    if manifest.notes:
        lines.append(f"notes: {manifest.notes}")
    for name, comp in manifest.components.items():
        origin = f"{comp.provenance.get('package')}=={comp.provenance.get('version')}"
        lines.append("")
        lines.append(f"  {name}  role={comp.role}  {comp.format}/{comp.precision}  {comp.size / 1e6:.2f} MB  "
                     f"sha256={comp.sha256[:12]}…")
        lines.append(f"    file: {comp.file}   from: {origin}   license: {comp.license}")
        if comp.inputs:
            lines.append(f"    inputs:  {_tensors(comp.inputs)}")
        if comp.outputs:
            lines.append(f"    outputs: {_tensors(comp.outputs)}")
        for state in comp.state:
            lines.append(f"    state:   {state.output} -> {state.input} {state.shape}")
        if comp.preprocess:
            lines.append(f"    preprocess: {comp.preprocess}")
        for key, value in comp.report.items():
            if not isinstance(value, dict | list):
                lines.append(f"    report.{key}: {value}")
    if manifest.calibration:
        summary = {k: v for k, v in manifest.calibration.items() if not isinstance(v, dict | list)}
        lines += ["", f"calibration: {summary}"]
    return "\n".join(lines)
