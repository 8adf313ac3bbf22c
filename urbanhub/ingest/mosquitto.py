"""Mosquitto's password and ACL files for the device registry, so the broker authenticates
every publisher and lets each device publish on its own topics only.

The password file holds Mosquitto 2's PBKDF2-SHA512 hashes (the ``$7$`` format that
``mosquitto_passwd`` writes). The registry computes a device's hash when it issues the key,
the only moment it knows the key, and keeps the hash; writing the files needs no secret but
the hub's own broker password (from ``URBANHUB_MQTT_URL``). Pure: the CLI writes the text.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from urbanhub.model.devices import DeviceStatus
from urbanhub.store.devices import DeviceRecord

#: Mosquitto's own default. Device keys carry 256 random bits, so key stretching would add
#: nothing but CPU on every CONNECT.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def broker_password_hash(password: str, salt: bytes | None = None,
                         iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$<iterations>$<salt>$<hash>``, base64, as ``mosquitto_passwd`` writes it."""
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


@dataclass(frozen=True)
class BrokerAccount:
    """A device that may connect: its id (the MQTT user name) and its password hash."""

    device_id: str
    password_hash: str


def broker_accounts(devices: Iterable[DeviceRecord]
                    ) -> tuple[list[BrokerAccount], list[tuple[str, str]]]:
    """The MQTT devices that may connect now, and the others with why not. Only active
    devices get an account: the broker turns the others away before the hub has to."""
    accounts, left_out = [], []
    for device in devices:
        if device.transport != "MQTT":
            continue
        credential, status = device.credential, device.governance.status
        if status is not DeviceStatus.ACTIVE:
            left_out.append((device.id, status.value))
        elif credential is None or credential.broker_password_hash is None:
            left_out.append((device.id, "no device key yet: rotate one"))
        elif ":" in device.id:
            left_out.append((device.id, "its id has a ':', which Mosquitto user names "
                                        "cannot hold"))
        else:
            accounts.append(BrokerAccount(device.id, credential.broker_password_hash))
    return accounts, left_out


@dataclass
class BrokerFiles:
    passwords: str
    acl: str
    devices: list[str] = field(default_factory=list)  # device ids given an account


def broker_files(accounts: Iterable[BrokerAccount], topic_root: str,
                 hub_user: str | None, hub_password: str | None) -> BrokerFiles:
    """The two files: every account with its hash; the hub reading both ingest subtrees;
    each device writing ``{root}/devices/{id}/attrs`` and ``…/attrs/{key}``, nothing else.

    Publishing on ``{root}/ngsi-ld/entities`` is granted to nobody: add gateway accounts by
    hand if a deployment needs them.
    """
    lines, rules = [], ["# Written by `urbanhub devices mosquitto-config`: run it again "
                        "rather than editing."]
    if hub_user is not None and hub_password is not None:
        lines.append(f"{hub_user}:{broker_password_hash(hub_password)}")
        rules += ["", f"user {hub_user}", f"topic read {topic_root}/devices/#",
                  f"topic read {topic_root}/ngsi-ld/#"]
    files = BrokerFiles("", "")
    for account in sorted(accounts, key=lambda a: a.device_id):
        if account.device_id == hub_user:
            raise ValueError(f"device {account.device_id} has the hub's broker user name")
        lines.append(f"{account.device_id}:{account.password_hash}")
        prefix = f"{topic_root}/devices/{account.device_id}/attrs"
        rules += ["", f"user {account.device_id}", f"topic write {prefix}",
                  f"topic write {prefix}/+"]
        files.devices.append(account.device_id)
    files.passwords = "".join(f"{line}\n" for line in lines)
    files.acl = "".join(f"{line}\n" for line in rules)
    return files
