"""WebRTC meeting plugin: `edgeomni serve` captions every participant's audio/video over a data channel.

Modules: ``server`` (aiohttp app + signaling), ``session`` (one participant: peer connection, pipeline,
caption channel), ``track_source`` (aiortc tracks -> EdgeOmni frames), ``room`` (fan-out of captions to
every participant), ``client`` (a Python participant for bots and tests). aiortc and aiohttp are the
optional ``webrtc`` extra; nothing here is imported by ``edgeomni run``.
"""
