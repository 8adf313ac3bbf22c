"""IoT devices as governance sees them: what they collect, how risky that is, whether they
may write, and who may change that.

Pure rules, no I/O: the device registry (``urbanhub.ingest.devices``) stores devices and
audits every change, and the ingest pipeline asks ``gate_refusal`` about every batch.

Risk tiers follow the logic of New York City's IoT guidelines: the more sensitive what a
device collects, the stricter the rules. Each measured attribute has a data category
(inferred from its Smart Data Model name, or declared at provisioning); the device's tier
is the highest tier among its categories (``CATEGORY_TIERS``). A high-tier device writes
only once the privacy board has approved it. A tier can be overridden, always with a
written justification; only the privacy board or the CDO may take a high tier down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from urbanhub.model.caller import SYSTEM_ROLE, Caller
from urbanhub.model.errors import BadRequestData, Conflict, Forbidden
from urbanhub.model.governance import Role
from urbanhub.model.identity import KeyFormat, Scope, authorise

#: Device keys: ``uhd_<key id>_<secret>``, the HTTP ``X-Device-Key`` and the MQTT password.
DEVICE_KEY = KeyFormat("uhd", "device key", "DeviceKey")
#: Longest justification of a tier override (a paragraph or two, not a document).
MAX_JUSTIFICATION = 2000


class DataCategory(StrEnum):
    """What kind of data one measured attribute is."""

    ENVIRONMENTAL = "environmental"  # air quality, weather, water, noise *levels*
    ENERGY = "energy"  # power and energy metering
    ASSET_STATUS = "asset_status"  # state of city assets: lamp on/off, fill level, battery
    TRAFFIC_COUNT = "traffic_count"  # vehicle flows, speeds, lane occupancy
    OCCUPANCY = "occupancy"  # whether one space is taken; people counted in one place
    LOCATION_OF_PEOPLE = "location_of_people"  # positions of people or of what they carry
    IDENTIFIER = "identifier"  # licence plates, MAC addresses, card or person ids
    IMAGE = "image"  # photos, video frames
    AUDIO = "audio"  # sound recordings (a sound level is environmental)
    OTHER = "other"  # not recognised: medium until someone says what it is


class RiskTier(StrEnum):
    """Ordered from least to most risky; compare with ``rank``."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]


_TIER_RANK = {tier: rank for rank, tier in enumerate(RiskTier)}

#: The rule. A device's derived tier is the highest tier of the categories it collects.
CATEGORY_TIERS: Mapping[DataCategory, RiskTier] = MappingProxyType({
    DataCategory.IDENTIFIER: RiskTier.HIGH,
    DataCategory.IMAGE: RiskTier.HIGH,
    DataCategory.AUDIO: RiskTier.HIGH,
    DataCategory.LOCATION_OF_PEOPLE: RiskTier.HIGH,
    DataCategory.OCCUPANCY: RiskTier.MEDIUM,
    DataCategory.TRAFFIC_COUNT: RiskTier.MEDIUM,
    DataCategory.OTHER: RiskTier.MEDIUM,
    DataCategory.ENVIRONMENTAL: RiskTier.LOW,
    DataCategory.ENERGY: RiskTier.LOW,
    DataCategory.ASSET_STATUS: RiskTier.LOW,
})

# Well-known attribute names (Smart Data Models and common sensor vocabularies), compared
# case-insensitively on the last segment of the attribute's IRI.
_KNOWN_NAMES: dict[DataCategory, tuple[str, ...]] = {
    DataCategory.ENVIRONMENTAL: (
        "pm1", "pm25", "pm4", "pm10", "no", "no2", "nox", "o3", "co", "co2", "so2", "nh3",
        "h2s", "c6h6", "benzene", "volatileOrganicCompoundsTotal", "airQualityIndex",
        "airQualityLevel", "temperature", "relativeHumidity", "humidity",
        "atmosphericPressure", "windSpeed", "windDirection", "precipitation", "rainfall",
        "solarRadiation", "illuminance", "uVIndexMax", "dewPoint", "visibility", "snowHeight",
        "LAeq", "LAmax", "LAS", "LASmax", "LAeq_d", "Lden", "Lnight", "noiseLevel",
        "waterLevel", "pH", "turbidity", "conductivity", "dissolvedOxygen", "salinity",
        "soilMoisture", "soilTemperature"),
    DataCategory.ENERGY: (
        "powerConsumption", "activePower", "reactivePower", "apparentPower", "powerFactor",
        "energyConsumed", "activeEnergyImport", "activeEnergyExport",
        "totalActiveEnergyImport", "voltage", "current"),
    DataCategory.ASSET_STATUS: (
        "powerState", "illuminanceLevel", "fillingLevel", "status", "batteryLevel",
        "lanternState", "operationalStatus", "weight", "cargoWeight"),
    DataCategory.TRAFFIC_COUNT: (
        "intensity", "averageVehicleSpeed", "averageVehicleLength", "averageHeadwayTime",
        "averageGapDistance", "congested", "vehicleCount"),
    DataCategory.OCCUPANCY: (
        "occupancy", "availableSpotNumber", "occupiedSpotNumber", "peopleCount",
        "peopleOccupancy", "crowdCount"),
    DataCategory.LOCATION_OF_PEOPLE: (
        "location", "currentLocation", "position", "trajectory", "gpsPosition"),
    DataCategory.IDENTIFIER: (
        "vehiclePlateIdentifier", "plateIdentifier", "plateNumber", "licensePlate",
        "licencePlate", "macAddress", "bluetoothAddress", "wifiMacAddress", "imei", "imsi",
        "personId", "faceId", "cardId"),
    DataCategory.IMAGE: ("image", "picture", "photo", "snapshot", "video", "videoStream"),
    DataCategory.AUDIO: ("audio", "audioRecording", "soundRecording", "audioStream"),
}
_BY_NAME = {name.lower(): category for category, names in _KNOWN_NAMES.items()
            for name in names}
# Names whose meaning depends on the entity type: (type, attribute) -> category.
_BY_TYPE_AND_NAME = {
    ("parkingspot", "status"): DataCategory.OCCUPANCY,  # free or occupied: one space
    ("trafficflowobserved", "occupancy"): DataCategory.TRAFFIC_COUNT,  # a lane's share
}


def short_name(iri: str) -> str:
    """The last segment of an IRI (after ``/``, ``#`` or ``:``): what vocabularies share."""
    return re.split(r"[/#:]", iri)[-1]


def infer_category(entity_type: str, attribute: str, kind: str) -> DataCategory:
    """The category of a measured attribute from its name (and the entity type's); a
    measured GeoProperty of an unknown name is a position, so ``location_of_people``."""
    name = short_name(attribute).lower()
    found = (_BY_TYPE_AND_NAME.get((short_name(entity_type).lower(), name))
             or _BY_NAME.get(name))
    if found is not None:
        return found
    return DataCategory.LOCATION_OF_PEOPLE if kind == "GeoProperty" else DataCategory.OTHER


def declared_category_problem(inferred: DataCategory, declared: DataCategory) -> str | None:
    """Why a declared category may not replace the inferred one, or None when it may.

    Declaring a category is for naming what the hub could not recognise (``other``) or a
    riskier reading of it; declaring a less risky one would lower the tier without the
    justification an override needs.
    """
    tier_inferred, tier_declared = CATEGORY_TIERS[inferred], CATEGORY_TIERS[declared]
    if inferred is DataCategory.OTHER or tier_declared.rank >= tier_inferred.rank:
        return None
    return (f"is {inferred.value} ({tier_inferred.value} risk) by its name; declaring it "
            f"{declared.value} ({tier_declared.value} risk) would lower the device's risk "
            "tier: provision it as it is and ask for a tier override with a justification")


def derive_tier(categories: Iterable[DataCategory]) -> RiskTier:
    """The highest tier among the categories (low when there are none)."""
    return max((CATEGORY_TIERS[c] for c in categories), key=lambda t: t.rank,
               default=RiskTier.LOW)


class DeviceStatus(StrEnum):
    PENDING_APPROVAL = "pending_approval"  # high tier, not yet approved by the privacy board
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"  # for good: a retired device never writes again


@dataclass(frozen=True)
class TierOverride:
    tier: RiskTier
    justification: str
    by: str  # subject
    at: datetime


@dataclass(frozen=True)
class Approval:
    """The privacy board's approval of a high-tier device."""

    by: str
    at: datetime


def check_justification(text: str) -> str:
    """The justification of a tier override, stripped; 400 when empty or too long."""
    stripped = text.strip()
    if not stripped:
        raise BadRequestData("A tier override needs a justification: say why the derived "
                             "tier does not fit this device.")
    if len(stripped) > MAX_JUSTIFICATION:
        raise BadRequestData(f"A justification must be at most {MAX_JUSTIFICATION} "
                             "characters.")
    return stripped


@dataclass(frozen=True)
class DeviceGovernance:
    """Who owns a device, its tier (derived, perhaps overridden), approval and status.

    Every change returns a new value; the registry stores it with an audit entry.
    """

    owner: str | None  # organisation id; None only for devices provisioned before 0007
    derived_tier: RiskTier
    status: DeviceStatus
    override: TierOverride | None = None
    approval: Approval | None = None

    @classmethod
    def provisioned(cls, owner: str, derived_tier: RiskTier) -> DeviceGovernance:
        """A new device: a high-tier one waits for the privacy board, others write at once."""
        status = (DeviceStatus.PENDING_APPROVAL if derived_tier is RiskTier.HIGH
                  else DeviceStatus.ACTIVE)
        return cls(owner, derived_tier, status)

    @property
    def tier(self) -> RiskTier:
        """The tier in force: the override if there is one, else the derived tier."""
        return self.override.tier if self.override is not None else self.derived_tier

    @property
    def needs_approval(self) -> bool:
        return self.tier is RiskTier.HIGH and self.approval is None

    def _settled(self, status: DeviceStatus) -> DeviceStatus:
        """``active`` becomes ``pending_approval`` while approval is needed, and back."""
        if status is DeviceStatus.ACTIVE and self.needs_approval:
            return DeviceStatus.PENDING_APPROVAL
        if status is DeviceStatus.PENDING_APPROVAL and not self.needs_approval:
            return DeviceStatus.ACTIVE
        return status

    def with_status(self, requested: DeviceStatus, device_id: str) -> DeviceGovernance:
        """Suspend, reactivate or retire; reactivating a high-tier device that was never
        approved puts it back in the privacy board's queue."""
        if requested is self.status:
            return self
        if self.status is DeviceStatus.RETIRED:
            raise Conflict(f"Device {device_id} is retired and stays so: provision a new "
                           "device instead.")
        if requested is DeviceStatus.PENDING_APPROVAL:
            raise BadRequestData("pending_approval is set by the hub, not requested: a "
                                 "high-tier device waits for the privacy board's approval.")
        if requested is DeviceStatus.ACTIVE and self.status is DeviceStatus.PENDING_APPROVAL:
            raise Conflict(f"Device {device_id} awaits the privacy board's approval; it "
                           "cannot be activated before.")
        return replace(self, status=self._settled(requested))

    def approved(self, approval: Approval, device_id: str) -> DeviceGovernance:
        if self.status is not DeviceStatus.PENDING_APPROVAL:
            raise Conflict(f"Device {device_id} is {self.status.value}: only a device "
                           "pending approval can be approved.")
        return replace(self, approval=approval, status=DeviceStatus.ACTIVE)

    def overridden(self, override: TierOverride) -> DeviceGovernance:
        """The tier set by ``override``; an active device raised to high and never approved
        waits for the board, a pending one taken below high writes at once."""
        changed = replace(self, override=override)
        return replace(changed, status=changed._settled(self.status))


# --- who may do what ------------------------------------------------------------------------

#: Roles that run devices: provision, suspend, reactivate, retire, rotate keys, delete.
DEVICE_MANAGERS = frozenset({Role.CDO, Role.STEWARD, Role.OPERATOR})
_TIER_LOWERERS = frozenset({Role.PRIVACY_BOARD, Role.CDO})


def check_device_manager(caller: Caller, action: str) -> None:
    """A role that runs devices, with a write credential (or a hub component); checked
    before anything is read, so an anonymous caller learns nothing but "log in"."""
    if SYSTEM_ROLE not in caller.roles:
        authorise(caller, action, Scope.WRITE, DEVICE_MANAGERS)


def check_may_manage(caller: Caller, owner: str | None, action: str) -> None:
    """The CDO, or a steward or operator of the owning organisation, with a write
    credential (the hub's own components too); ``action`` as in "Suspending a device"."""
    check_device_manager(caller, action)
    if SYSTEM_ROLE in caller.roles:
        return
    if Role.CDO not in caller.roles and (owner is None or caller.organisation != owner):
        whose = f"organisation {owner}" if owner else "the organisation owning the device"
        raise Forbidden(f"{action} needs the role cdo, or steward or operator of {whose}; "
                        f"{caller.subject} is a member of {caller.organisation}.")


def check_may_give(caller: Caller) -> None:
    """Handing a device to another organisation is the CDO's (it moves who may run it)."""
    if SYSTEM_ROLE not in caller.roles:
        authorise(caller, "Giving a device to another organisation", Scope.WRITE,
                  frozenset({Role.CDO}))


def check_may_approve(caller: Caller) -> None:
    """Approval is the privacy board's alone (not even the CDO's: separation of duties)."""
    authorise(caller, "Approving a high-risk device", Scope.GOVERN,
              frozenset({Role.PRIVACY_BOARD}))


def check_may_override(caller: Caller, device: DeviceGovernance, tier: RiskTier) -> None:
    """Taking a device below high (derived or in force) needs the privacy board or the
    CDO; any other override also the owning organisation's stewards and operators."""
    if SYSTEM_ROLE in caller.roles:
        return
    lowers_high = tier is not RiskTier.HIGH and RiskTier.HIGH in (device.derived_tier,
                                                                   device.tier)
    if lowers_high:
        authorise(caller, "Lowering a high risk tier", Scope.GOVERN, _TIER_LOWERERS)
    elif Role.PRIVACY_BOARD in caller.roles:
        authorise(caller, "Overriding a risk tier", Scope.GOVERN, _TIER_LOWERERS)
    else:
        check_may_manage(caller, device.owner, "Overriding a risk tier")


# --- the ingest gate -------------------------------------------------------------------------

class Refusal(StrEnum):
    """Why ingest refused something: the code the audit trail groups refusals by."""

    UNAUTHENTICATED = "unauthenticated"  # no valid credential for writing
    NOT_PERMITTED = "not_permitted"  # a credential that may not write this device
    UNKNOWN_DEVICE = "unknown_device"
    PENDING_APPROVAL = "pending_approval"
    SUSPENDED = "suspended"
    RETIRED = "retired"
    UNDECLARED_ATTRIBUTE = "undeclared_attribute"
    UNKNOWN_ENTITY = "unknown_entity"
    INVALID = "invalid"  # not JSON, bad value, bad time: the payload itself is wrong


_STATUS_REFUSALS = {
    DeviceStatus.PENDING_APPROVAL: (Refusal.PENDING_APPROVAL,
                                    "awaits the privacy board's approval (high risk tier)"),
    DeviceStatus.SUSPENDED: (Refusal.SUSPENDED, "is suspended"),
    DeviceStatus.RETIRED: (Refusal.RETIRED, "is retired"),
}


@dataclass(frozen=True, slots=True)
class Sender:
    """Who hands readings to ingest, as far as the gate is concerned."""

    actor: str  # the audit trail's actor
    device: str | None = None  # authenticated by a device key: that device only
    caller: Caller | None = None  # a member's credential: the devices its organisation owns
    trusted: bool = False  # the transport authenticated the device, or a hub component

    @classmethod
    def of_device(cls, device_id: str) -> Sender:
        return cls(f"device:{device_id}", device=device_id)

    @classmethod
    def of_caller(cls, caller: Caller) -> Sender:
        """A member's credential (a gateway's or partner platform's API key)."""
        return cls(caller.subject, caller=caller)

    @property
    def organisation(self) -> str | None:
        return self.caller.organisation if self.caller is not None else None

    @classmethod
    def component(cls, name: str) -> Sender:
        """The hub itself: the MQTT adapter (the broker authenticated the publisher and its
        ACL ties it to its own topics) or a file import run by an administrator."""
        return cls(f"system:{name}", trusted=True)


class WritingDevice(Protocol):
    """What the gate needs to know about the device that writes an entity."""

    @property
    def device_id(self) -> str: ...

    @property
    def owner(self) -> str | None: ...

    @property
    def status(self) -> DeviceStatus: ...


def gate_refusal(sender: Sender, device: WritingDevice | None,
                 entity_id: str) -> tuple[Refusal, str] | None:
    """Why ``sender`` may not write readings of ``entity_id`` (written by ``device``, or by
    no device), or None when it may. Permission is checked before status, so a sender
    learns nothing about devices that are not its own."""
    if sender.device is not None:
        if device is None or device.device_id != sender.device:
            return Refusal.NOT_PERMITTED, (f"the device key of {sender.device} writes only "
                                           f"that device's readings, not {entity_id}'s")
    elif not sender.trusted and device is not None and (
            device.owner is None or device.owner != sender.organisation):
        return Refusal.NOT_PERMITTED, (f"device {device.device_id} is not owned by "
                                       f"organisation {sender.organisation}")
    if device is None or device.status is DeviceStatus.ACTIVE:
        return None
    code, text = _STATUS_REFUSALS[device.status]
    return code, f"device {device.device_id} {text}"
