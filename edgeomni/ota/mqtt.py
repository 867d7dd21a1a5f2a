"""The MQTT client shared by the publisher and the device updater (paho-mqtt, MQTT 5).

MQTT 5 rather than 3.1.1 because a 3.1.1 broker acknowledges a publish its ACL silently dropped; with 5
the PUBACK carries "not authorized", so a misconfigured publisher fails loudly instead of announcing nothing.
Broker URLs are parsed by `edgeomni.sync.config.BrokerAddress` (one parser for the whole project).
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING

from edgeomni.errors import ConfigError, OtaError
from edgeomni.sync.config import BrokerAddress

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


def parse_broker(url: str, where: str) -> BrokerAddress:
    try:
        return BrokerAddress.parse(url, where)
    except ConfigError as exc:
        raise OtaError(str(exc)) from None


def new_client(address: BrokerAddress, role: str, ca_file: str = "") -> mqtt.Client:
    """A paho client (MQTT 5, clean start) with credentials and TLS set; the caller connects it."""
    import paho.mqtt.client as mqtt

    client_id = f"{address.username or 'edgeomni'}-{role}-{os.getpid()}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls or ca_file:
        client.tls_set(ca_certs=ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(min_delay=1, max_delay=60)
    return client
