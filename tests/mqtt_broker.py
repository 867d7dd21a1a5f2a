"""A private Mosquitto broker for tests: free loopback port, own config, passwords, ACLs, persistence.

Usage (directly or through the `mqtt_broker` fixture factory below):

    broker = Broker.start(tmp_path, users={"dev-a": "pw-a"}, trainers={"trainer": "pw-t"}, fleet="test")
    broker.url_for("dev-a")   # mqtt://dev-a:pw-a@127.0.0.1:PORT
    broker.stop(); broker.start_again()   # same port, same persistence (fault tests)
    broker.close()            # stop and forget; always called by the fixture
    Broker.start(..., tls=True)   # TLS listener: url_for() gives mqtts://, broker.ca_file is the CA to trust

ACL (pattern based): a device user may write only `edgeomni/<fleet>/<its username>/#` and read
`edgeomni/<fleet>/bundles/#`; a trainer user may read everything under `edgeomni/#` and write bundles.
"""

from __future__ import annotations

import contextlib
import getpass
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).is_file() and Path(MOSQUITTO_PASSWD).is_file()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {host}:{port} within {timeout} s")


@dataclass
class Broker:
    workdir: Path
    port: int
    fleet: str
    users: dict[str, str]
    trainers: dict[str, str]
    host: str = "127.0.0.1"
    tls: bool = False  # a TLS listener with a private CA (ca_file) and a certificate for 127.0.0.1
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @classmethod
    def start(cls, tmpdir: Path, users: dict[str, str], trainers: dict[str, str] | None = None,
              fleet: str = "test", port: int | None = None, tls: bool = False) -> Broker:
        if not mosquitto_available():
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        workdir = Path(tmpdir) / "mosquitto"
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        broker = cls(workdir, port or free_port(), fleet, dict(users), dict(trainers or {"trainer": "trainer-pw"}),
                     tls=tls)
        if tls:
            broker._make_certificates()
        broker._write_config()
        broker.start_again()
        return broker

    # -- configuration ---------------------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_config(self) -> None:
        passwd = self.workdir / "passwd"
        passwd.write_text("")
        for user, password in {**self.users, **self.trainers}.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True, capture_output=True)
        passwd.chmod(0o600)
        acl = [f"# trainers: read every device's records, publish bundles for fleet {self.fleet}"]
        for trainer in self.trainers:
            acl += [f"user {trainer}", "topic read edgeomni/#", f"topic readwrite edgeomni/{self.fleet}/bundles/#"]
        acl += ["", "# devices (any other user): write only their own topics, read the fleet's bundles",
                f"pattern write edgeomni/{self.fleet}/%u/#", f"pattern read edgeomni/{self.fleet}/bundles/#", ""]
        (self.workdir / "acl").write_text("\n".join(acl))
        (self.workdir / "acl").chmod(0o600)
        self.conf_path.write_text("\n".join([
            # started as root, mosquitto would switch to the `mosquitto` user, who cannot read our 0600 files
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            *([f"cafile {self.ca_file}", f"certfile {self.workdir / 'server.crt'}",
               f"keyfile {self.workdir / 'server.key'}"] if self.tls else []),
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {self.workdir / 'acl'}",
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "",
        ]))

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start_again(self) -> None:
        """(Re)start on the same port with the same persistence directory."""
        if self.running:
            return
        with (self.workdir / "stderr.log").open("ab") as stderr:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL,
                                          stderr=stderr, start_new_session=True)
        _wait_listening(self.host, self.port, self._proc, self.workdir / "stderr.log")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM: mosquitto saves its persistence database)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def close(self) -> None:
        self.stop()

    def url_for(self, user: str, password: str | None = None) -> str:
        secret = password if password is not None else {**self.users, **self.trainers}[user]
        return f"{self.scheme}://{user}:{secret}@{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Address without credentials."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "ca.crt"

    def _make_certificates(self) -> None:
        """A throw-away CA and a server certificate for 127.0.0.1, with the openssl command line."""
        w = self.workdir

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edgeomni test CA",
                "-keyout", str(w / "ca.key"), "-out", str(self.ca_file))
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={self.host}", "-keyout", str(w / "server.key"),
                "-out", str(w / "server.csr"))
        (w / "san.ext").write_text(f"subjectAltName=IP:{self.host}\n")
        openssl("x509", "-req", "-in", str(w / "server.csr"), "-CA", str(self.ca_file), "-CAkey", str(w / "ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", str(w / "san.ext"), "-out", str(w / "server.crt"))
        (w / "server.key").chmod(0o600)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


BrokerFactory = Callable[..., Broker]


@pytest.fixture
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerFactory]:
    """Factory fixture: `broker = mqtt_broker(users={...}, trainers={...}, fleet="test")`; stopped at teardown.

    Skips the test when mosquitto is not installed (`make test` installs it via APT_PACKAGES).
    """
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    started: list[Broker] = []

    def factory(users: dict[str, str], trainers: dict[str, str] | None = None, fleet: str = "test",
                tls: bool = False) -> Broker:
        broker = Broker.start(tmp_path_factory.mktemp("broker"), users=users, trainers=trainers, fleet=fleet, tls=tls)
        started.append(broker)
        return broker

    yield factory
    for broker in started:
        broker.close()
