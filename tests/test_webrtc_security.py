"""What a stranger can do to `edgeomni serve`: fill it with sessions that never connect, race past the session cap,
reach it through a foreign Host (DNS rebinding) or a cross-site form, read TURN credentials or internal paths,
hold its file descriptors with half-sent requests; and what TLS and the page do with the token."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from test_webrtc_browser import start_chromium
from webrtc_support import ROOT, TOKEN, ServerThread, http, raw_request

from edgeomni.errors import ConfigError
from edgeomni.events import OtaEvent
from edgeomni.webrtc.ice import IceServer, rtc_configuration
from edgeomni.webrtc.server import ServeConfig


async def _vanished_offer() -> str:
    """A data-channel-only offer whose peer is gone the moment it is made: it will never connect."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection(rtc_configuration([]))
    try:
        pc.createDataChannel("captions")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def _offer_body(sdp: str, name: str = "tester") -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer", "name": name}).encode()


@pytest.fixture(scope="module")
def server(default_bundle: Path):
    running = ServerThread(default_bundle).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def open_server(default_bundle: Path):
    """No token: the loopback-only mode."""
    running = ServerThread(default_bundle, token=None).start()
    yield running
    running.stop()


def _close_all(server: ServerThread) -> None:
    for session in list(server.server.sessions.values()):
        http("DELETE", f"{server.url}/session/{session.id}")
    server.wait_for(lambda: not server.server.sessions, 15, "every session to close")


# -- sessions: the cap holds under concurrency, and one that never connects ends -----------------------------
def test_the_session_cap_holds_for_concurrent_offers(server: ServerThread) -> None:
    offers = [asyncio.run(_vanished_offer()) for _ in range(8)]
    server.server.serve.max_sessions = 3
    statuses: list[int] = []
    start = threading.Barrier(len(offers))

    def post(sdp: str) -> None:
        start.wait()
        statuses.append(http("POST", f"{server.url}/offer", _offer_body(sdp))[0])

    try:
        workers = [threading.Thread(target=post, args=(sdp,)) for sdp in offers]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert sorted(statuses) == [200] * 3 + [503] * 5, statuses
        assert len(server.server.sessions) == 3
    finally:
        server.server.serve.max_sessions = 16
        _close_all(server)


def test_a_data_channel_only_session_that_never_connects_is_closed(server: ServerThread) -> None:
    server.server.serve.connect_timeout_s = 2.0
    try:
        status, body = http("POST", f"{server.url}/offer", _offer_body(asyncio.run(_vanished_offer()), "ghost"))
        assert status == 200, body
        server.wait_for(lambda: not server.server.sessions, 8, "the session that never connected to close")
    finally:
        server.server.serve.connect_timeout_s = 20.0
        _close_all(server)
    assert server.server.closed[-1]["reason"] == "not connected within 2 s of the offer"


# -- without a token: this machine only, same origin only ---------------------------------------------------
def test_without_a_token_a_foreign_host_header_is_refused(open_server: ServerThread) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, and the victim's browser sends Host: evil.example."""
    port = open_server.serve.port
    status, body = raw_request(f"{open_server.url}/sessions", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and b"Host" in body, body
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert raw_request(f"{open_server.url}/health", headers={"Host": host})[0] == 200, host


def test_without_a_token_a_cross_site_post_is_refused(open_server: ServerThread) -> None:
    """A page on another site can POST text/plain without a preflight; the offer must not become a session."""
    sdp = asyncio.run(_vanished_offer())
    port = open_server.serve.port
    cross_site = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    try:
        status, body = raw_request(f"{open_server.url}/offer", "POST", _offer_body(sdp), cross_site)
        assert status == 403 and b"Origin" in body, body
        status, body = raw_request(f"{open_server.url}/offer", "POST", _offer_body(sdp),
                                {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "text/plain"})
        assert status == 415 and b"application/json" in body, body
        status, body = raw_request(f"{open_server.url}/offer", "POST", _offer_body(sdp),
                                {"Origin": "http://evil.example", "Content-Type": "application/json"})
        assert status == 403, body
        assert not open_server.server.sessions
        status, body = raw_request(f"{open_server.url}/offer", "POST", _offer_body(sdp),
                                {"Origin": f"http://127.0.0.1:{port}", "Content-Type": "application/json"})
        assert status == 200, body  # the page itself: same origin, JSON
    finally:
        _close_all(open_server)


# -- what unauthenticated endpoints tell -------------------------------------------------------------------
def test_config_gives_turn_credentials_only_with_the_token(server: ServerThread) -> None:
    server.server.serve.ice_servers = [IceServer.parse("turn:10.0.0.1:3478,turn-user,turn-secret-77"),
                                       IceServer.parse("stun:10.0.0.1:3478")]
    try:
        status, public = http("GET", f"{server.url}/config", token=None)
        assert status == 200 and public["auth"] is True
        assert "turn-secret-77" not in json.dumps(public) and "turn-user" not in json.dumps(public)
        assert {"urls": ["stun:10.0.0.1:3478"]} in public["iceServers"]
        status, full = http("GET", f"{server.url}/config")
        assert status == 200 and {"urls": ["turn:10.0.0.1:3478"], "username": "turn-user",
                                  "credential": "turn-secret-77"} in full["iceServers"]
    finally:
        server.server.serve.ice_servers = []


def test_health_names_nothing_internal(server: ServerThread) -> None:
    server.server.last_ota = OtaEvent(status="refused", bundle="default@9.9.9", running="default@1.3.0",
                                      url="http://10.1.2.3:8765/default-9.9.9.tar", path="/var/cache/edgeomni/x",
                                      reason="/var/cache/edgeomni/x: sha256 expected ...").to_dict()
    try:
        status, health = http("GET", f"{server.url}/health", token=None)
    finally:
        server.server.last_ota = None
    text = json.dumps(health)
    assert status == 200 and health["bundle_tag"].startswith("default@")
    assert str(server.server.engines.bundle.path) not in text and "/var/cache" not in text and "10.1.2.3" not in text
    assert health["ota"] == {"status": "refused", "bundle": "default@9.9.9"}


# -- slowloris: half-sent requests are cut, one address cannot take every descriptor -------------------------
def test_half_sent_requests_are_closed_and_one_address_cannot_hold_every_connection(default_bundle: Path) -> None:
    running = ServerThread(default_bundle, header_timeout_s=1.0, max_connections_per_ip=8).start()
    sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", running.serve.port), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            sockets.append(sock)
        # The 1 s header timeout closes them; each is awaited up to a shared deadline rather than checked after a
        # fixed sleep (a loaded machine's server loop may take longer), and one never closed still fails.
        deadline = time.monotonic() + 15
        closed = 0
        for sock in sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(sockets), f"only {closed} of {len(sockets)} half-sent requests were closed"
        assert http("GET", f"{running.url}/health", token=None)[0] == 200
    finally:
        for sock in sockets:
            sock.close()
        running.stop()


def test_serve_raises_its_open_file_limit_to_the_hard_limit() -> None:
    script = ("import resource; soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE);"
              "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard));"
              "from edgeomni.webrtc.guard import raise_open_files_limit; raise_open_files_limit();"
              "print(*resource.getrlimit(resource.RLIMIT_NOFILE))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    soft, hard = map(int, proc.stdout.split())
    assert soft == hard or soft >= 65536, (soft, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] == hard


# -- TLS -----------------------------------------------------------------------------------------------------
def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_over_tls(default_bundle: Path, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        ServeConfig(tls_cert=cert).validate()
    running = ServerThread(default_bundle, tls=(cert, key)).start()
    try:
        assert running.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(f"{running.url}/health", context=context, timeout=30) as reply:
            assert reply.status == 200 and json.loads(reply.read())["status"] == "ok"
        with pytest.raises(OSError):  # plain HTTP on the TLS port gets no answer
            urllib.request.urlopen(f"http://127.0.0.1:{running.serve.port}/health", timeout=5)
    finally:
        running.stop()


# -- the page drops ?token= from the address bar ------------------------------------------------------------
@pytest.mark.slow
def test_the_page_takes_the_token_out_of_the_address_bar(default_bundle: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = start_chromium(tmp_path)
    running = ServerThread(default_bundle).start()
    try:
        driver.get(f"{running.url}/?token={TOKEN}&name=Alice")
        deadline = time.monotonic() + 10
        while "token=" in driver.current_url and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "token=" not in driver.current_url and "name=Alice" in driver.current_url
        assert driver.find_element(By.ID, "token").get_attribute("value") == TOKEN
    finally:
        driver.quit()
        running.stop()
