"""Outbox -> MQTT sync (device side). paho-mqtt (the `sync` extra) is imported only by the worker."""

from edgeomni.sync.config import BrokerAddress, SyncConfig

__all__ = ["BrokerAddress", "SyncConfig"]
