"""Error types. Each message names what was wrong: the file, stream or field, and expected vs got."""


class EdgeOmniError(Exception):
    """Base class for every error the CLI reports as a clean one-line message."""


class ConfigError(EdgeOmniError):
    """A configuration field has a bad value."""


class SourceError(EdgeOmniError):
    """A source cannot be opened or decoded (missing file, corrupt media, unknown kind, no device)."""


class BundleError(EdgeOmniError):
    """A bundle is missing, malformed, or fails verification."""


class SinkError(EdgeOmniError):
    """A sink specification is malformed or its target cannot be written."""


class ExportError(EdgeOmniError):
    """The export stage failed (missing weights package, accuracy gate not met, ...)."""


class OtaError(EdgeOmniError):
    """A bundle update was refused: bad announcement, download failure, bad signature or a changed file."""


class EngineError(EdgeOmniError):
    """A model cannot be run the way it was asked to (a forced backend that is not available here)."""
