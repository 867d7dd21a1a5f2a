"""The meeting page in a real browser: headless Chromium with fake camera/microphone fed from generated files
joins over WebRTC, and the spoken sentence appears in the page's transcript."""

from __future__ import annotations

import shutil
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from media_factory import make_speech_wav
from webrtc_support import TOKEN, ServerThread

from edgeomni.wer import wer, words

pytestmark = pytest.mark.slow

SENTENCE = "Please send me the report before the end of the week."
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def make_y4m(path: Path, seconds: float = 2.0, size: tuple[int, int] = (320, 240), fps: int = 15) -> Path:
    """A raw YUV4MPEG2 clip (what Chromium's fake camera reads): a bright bar sweeping over a gradient."""
    width, height = size
    with av.open(str(path), "w", format="yuv4mpegpipe") as out:
        stream = out.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        count = round(seconds * fps)
        gradient = np.linspace(0, 200, width, dtype=np.uint8)[None, :, None]
        for i in range(count):
            image = np.broadcast_to(gradient, (height, width, 3)).copy()
            x = (width - 60) * i // max(1, count - 1)
            image[height // 3: 2 * height // 3, x: x + 60] = (255, 230, 60)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def pad_wav(path: Path, before_s: float, after_s: float) -> Path:
    """Silence around the sentence: Chromium starts the fake microphone at getUserMedia(), about a second
    before the peer connection is up, so without a lead-in the first words of the first loop are lost."""
    with wave.open(str(path), "rb") as src:
        params, data = src.getparams(), src.readframes(src.getnframes())
    silence = lambda s: b"\0" * (round(s * params.framerate) * params.sampwidth * params.nchannels)  # noqa: E731
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(silence(before_s) + data + silence(after_s))
    return path


def start_chromium(tmp_path: Path, camera_size: tuple[int, int] = (320, 240)):
    """Headless Chromium whose fake microphone loops the sentence (then a pause that lets the endpointer close
    it) and whose fake camera plays a generated clip."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs Debian chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    speech = pad_wav(make_speech_wav(tmp_path / "speech.wav", SENTENCE, voice="en-us", speed=145), 2.0, 1.0)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={speech}",
                 f"--use-file-for-fake-video-capture={make_y4m(tmp_path / 'camera.y4m', size=camera_size)}",
                 "--allow-loopback-in-peer-connection",  # CI sandboxes may have no interface but lo
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                            options=options)


@pytest.fixture
def browser(tmp_path: Path):
    driver = start_chromium(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()


def test_meeting_page_shows_the_spoken_sentence(browser, default_bundle: Path) -> None:
    from selenium.webdriver.common.by import By

    server = ServerThread(default_bundle, idle_timeout_s=3.0).start()
    try:
        browser.get(f"{server.url}/?token={TOKEN}&name=Browser")
        browser.find_element(By.ID, "join").click()
        # A sentence may close as one final or several (at a comma); collect finals until they cover it.
        deadline = time.monotonic() + 40
        finals: list[str] = []
        while time.monotonic() < deadline and len(words(" ".join(finals))) < len(words(SENTENCE)):
            finals = [el.text for el in browser.find_elements(By.CSS_SELECTOR, "#transcript li.final .text")]
            time.sleep(0.3)
        status = browser.find_element(By.ID, "status").text
        assert finals, f"no final caption in the page within 40 s; status: {status!r}"
        heard = " ".join(finals)
        assert wer(SENTENCE, heard) <= 0.35, f"{heard!r} vs {SENTENCE!r}"
        speaker = browser.find_element(By.CSS_SELECTOR, "#transcript li.final .who").text
        assert speaker == "Browser"
        assert browser.find_element(By.ID, "overlay").text.strip(), "no caption over the self view"
        # The camera track reached the server too and its frames fed the session's pipeline.
        sessions = list(server.server.sessions.values())
        assert len(sessions) == 1 and sessions[0].source.has_video and sessions[0].source.has_audio
        assert sessions[0].source.buffer.received["video"] > 10
        browser.find_element(By.ID, "leave").click()
        server.wait_for(lambda: not server.server.sessions, 10, "the browser's session to close after Leave")
        assert server.server.closed[-1]["reason"] == "deleted by the client"
    finally:
        server.stop()


def test_meeting_page_shows_the_video_with_captions_burned_in(tmp_path: Path, default_bundle: Path) -> None:
    """"captions burned in" ticked: the page plays the video the server returns, and a frame grabbed from that
    <video> element reads back (OCR) as the spoken sentence."""
    import base64
    import io

    from PIL import Image
    from selenium.webdriver.common.by import By

    from edgeomni.bundle import verify_bundle
    from edgeomni.engines.ocr import TextReader

    driver = start_chromium(tmp_path, camera_size=(640, 360))
    server = ServerThread(default_bundle, idle_timeout_s=3.0).start()
    reader = TextReader(verify_bundle(default_bundle))
    grab = ("const v = document.getElementById('self-view'); if (!v.videoWidth) return null;"
            "const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;"
            "c.getContext('2d').drawImage(v, 0, 0); return c.toDataURL('image/png');")
    try:
        driver.get(f"{server.url}/?token={TOKEN}&name=Burned")
        driver.find_element(By.ID, "burn-in").click()
        driver.find_element(By.ID, "join").click()
        deadline, best, seen = time.monotonic() + 45, 1.0, ""
        while time.monotonic() < deadline and best > 0.35:
            time.sleep(0.5)
            url = driver.execute_script(grab)
            if not url or driver.execute_script("return document.body.dataset.burnedIn") != "true":
                continue
            image = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
            text = " ".join(line.text for line in reader(image[-80:]))
            # The band shows the newest two lines of a caption: the share of its words that are the sentence's.
            if len(words(text)) >= 4:
                miss = 1.0 - sum(w in words(SENTENCE) for w in words(text)) / len(words(text))
                best, seen = (miss, text) if miss < best else (best, seen)
        print(f"burned-in caption read back: {seen!r}")
        assert best <= 0.35, f"no frame of the returned video read back as the sentence; best OCR: {seen!r}"
        assert not driver.find_element(By.ID, "overlay").is_displayed()  # the picture carries the captions
        session = next(iter(server.server.sessions.values()))
        assert session.burned is not None and session.burned.frames_sent > 20
    finally:
        driver.quit()
        server.stop()
