"""What each demo sensor measures at a given time: pure functions of (seed, sensor, time).

No state and no random generator that advances: every value comes from hashing the seed,
the device and the time, so a backfill, a live stream and a test all see the same reading
for the same instant, and a rerun with the same seed replays history exactly (which the
idempotent ingest then stores only once).

Shapes follow what cities measure: morning and evening rush hours on weekdays and a late,
lower peak at weekends; NO2 and noise driven by traffic; ozone built up by sunlight;
waste containers filling until their district's collection day; streetlights switched by
the sun's elevation and dimmed after midnight.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from urbanhub.sim.city import (
    AIR_QUALITY,
    CITY_TZ,
    NOISE,
    PARKING,
    STREETLIGHT,
    TRAFFIC,
    WASTE,
    City,
    Sensor,
)

Values = dict[str, Any]  # SDM attribute name -> value


@dataclass(frozen=True)
class FaultConfig:
    """How often sensors misbehave.

    ``gap_rate`` is the share of time a sensor is silent (gaps last 1 to ``max_gap_hours``
    whole hours), ``stuck_rate`` the share of sensor-hours that repeat the hour's first
    values, ``spike_rate`` the share of readings with one value multiplied 3-7 times.
    """

    gap_rate: float = 0.02
    stuck_rate: float = 0.01
    spike_rate: float = 0.005
    max_gap_hours: int = 4


NO_FAULTS = FaultConfig(gap_rate=0.0, stuck_rate=0.0, spike_rate=0.0)


@dataclass(frozen=True)
class Observation:
    """One device reading: values by SDM attribute name, and which fault shaped it."""

    sensor: Sensor
    observed_at: datetime
    values: Values
    fault: str | None = None  # "stuck" or "spike"


# --- deterministic noise ------------------------------------------------------------------

def unit(seed: int, *key: object) -> float:
    """A uniform number in [0, 1) that depends only on its arguments."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def normal(seed: int, *key: object) -> float:
    """A standard normal number that depends only on its arguments (Box-Muller)."""
    u1 = 1.0 - unit(seed, *key, "a")
    u2 = unit(seed, *key, "b")
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def _stamp(moment: datetime) -> int:
    return int(moment.timestamp())


# --- shared drivers -----------------------------------------------------------------------

def _hours(local: datetime) -> float:
    return local.hour + local.minute / 60 + local.second / 3600


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-((hour - centre) ** 2) / (2 * width**2))


def _plateau(hour: float, start: float, end: float) -> float:
    return 1 / (1 + math.exp(-2 * (hour - start))) / (1 + math.exp(2 * (hour - end)))


def traffic_factor(moment: datetime) -> float:
    """Share of peak road traffic (0..1) at a moment, in the city's local time."""
    local = moment.astimezone(CITY_TZ)
    hour = _hours(local)
    if local.weekday() >= 5:
        level = 0.07 + 0.45 * _bump(hour, 13.5, 3.5)
    else:
        level = (0.05 + 0.3 * _plateau(hour, 6.5, 20.0) + 0.65 * _bump(hour, 8.0, 1.0)
                 + 0.6 * _bump(hour, 17.5, 1.3))
    return min(1.0, level)


def sun_elevation(moment: datetime, latitude: float, longitude: float) -> float:
    """Solar elevation in degrees (NOAA approximation, good to a fraction of a degree)."""
    utc = moment.astimezone(UTC)
    day = utc.timetuple().tm_yday
    gamma = 2 * math.pi / 365 * (day - 1 + (utc.hour - 12) / 24)
    declination = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
                   - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma))
    equation = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                         - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    minutes = utc.hour * 60 + utc.minute + utc.second / 60 + equation + 4 * longitude
    hour_angle = math.radians(minutes / 4 - 180)
    lat = math.radians(latitude)
    cos_zenith = (math.sin(lat) * math.sin(declination)
                  + math.cos(lat) * math.cos(declination) * math.cos(hour_angle))
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def _weather(seed: int, moment: datetime) -> float:
    """City-wide air stagnation (0..1) drifting from day to day, shared by all stations."""
    days = moment.timestamp() / 86400
    today = math.floor(days)
    share = days - today
    return (1 - share) * unit(seed, "weather", today) + share * unit(seed, "weather", today + 1)


# --- per-kind patterns ----------------------------------------------------------------------

def _air_quality(city: City, sensor: Sensor, moment: datetime) -> Values:
    seed, key = city.seed, (sensor.device_id, _stamp(moment))
    traffic = traffic_factor(moment) * sensor.level
    weather = _weather(seed, moment)
    sun = max(0.0, math.sin(math.radians(sun_elevation(moment, city.latitude, city.longitude))))
    no2 = max(1.0, (10 + 55 * traffic) * (0.7 + 0.6 * weather) + 2.5 * normal(seed, *key, "no2"))
    o3 = max(1.0, 25 + 70 * sun - 0.35 * no2 + 3 * normal(seed, *key, "o3"))
    pm25 = max(1.0, 5 + 22 * weather + 9 * traffic + 1.5 * normal(seed, *key, "pm25"))
    pm10 = pm25 * 1.45 + 3 + 2 * abs(normal(seed, *key, "pm10"))
    local = moment.astimezone(CITY_TZ)
    season = -8 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 20) / 365)
    temperature = (11.5 + season + 4 * math.sin(2 * math.pi * (_hours(local) - 9) / 24)
                   + 0.3 * normal(seed, *key, "t"))
    return {"pm25": round(pm25, 1), "pm10": round(pm10, 1), "no2": round(no2, 1),
            "o3": round(o3, 1), "temperature": round(temperature, 1)}


def _noise(city: City, sensor: Sensor, moment: datetime) -> Values:
    key = (sensor.device_id, _stamp(moment))
    traffic = traffic_factor(moment) * sensor.level
    laeq = 36 + 10 * math.log10(1 + 400 * traffic) + 1.2 * normal(city.seed, *key, "laeq")
    lamax = laeq + 8 + 12 * unit(city.seed, *key, "lamax")
    return {"LAeq": round(laeq, 1), "LAmax": round(lamax, 1)}


def _traffic(city: City, sensor: Sensor, moment: datetime) -> Values:
    key = (sensor.device_id, _stamp(moment))
    factor = traffic_factor(moment)
    intensity = 1400 * sensor.level * factor * (1 + 0.08 * normal(city.seed, *key, "n"))
    speed = 50 * (1 - 0.55 * factor**2) + 2 * normal(city.seed, *key, "v")
    occupancy = min(0.95, 0.02 + 0.6 * (factor * min(sensor.level, 1.3)) ** 1.5)
    return {"intensity": max(0, round(intensity)), "averageVehicleSpeed": round(max(5, speed), 1),
            "occupancy": round(occupancy, 3)}


def parking_demand(sensor: Sensor, moment: datetime) -> float:
    """Probability that a spot is taken: shops fill by day, homes by night."""
    local = moment.astimezone(CITY_TZ)
    hour = _hours(local)
    weekend = local.weekday() >= 5
    if sensor.district.land_use in ("residential", "suburban"):
        return 0.85 - 0.45 * _plateau(hour, 8.0, 17.0) * (0.4 if weekend else 1.0)
    return 0.15 + 0.75 * _plateau(hour, 8.5, 19.0) * (0.7 if weekend else 1.0)


def _parking(city: City, sensor: Sensor, moment: datetime) -> Values:
    slot = _stamp(moment) // 600  # a car stays at least ten minutes
    taken = unit(city.seed, sensor.device_id, "park", slot) < parking_demand(sensor, moment)
    return {"status": "occupied" if taken else "free"}


def last_collection(sensor: Sensor, moment: datetime) -> datetime:
    """When the container was last emptied: 06:00 local on its district's collection days."""
    local = moment.astimezone(CITY_TZ)
    for back in range(8):
        day = (local - timedelta(days=back)).replace(hour=6, minute=0, second=0, microsecond=0)
        if day.weekday() in sensor.district.collection_days and day <= local:
            return day
    raise AssertionError("collection days repeat every week")


def _waste(city: City, sensor: Sensor, moment: datetime) -> Values:
    since = (moment - last_collection(sensor, moment)).total_seconds() / 86400
    rate = 0.18 + 0.14 * unit(city.seed, sensor.device_id, "fill-rate")  # share per day
    jitter = 0.01 * normal(city.seed, sensor.device_id, _stamp(moment), "f")
    return {"fillingLevel": round(min(1.0, max(0.0, 0.02 + rate * since + jitter)), 3)}


def _streetlight(city: City, sensor: Sensor, moment: datetime) -> Values:
    dark = sun_elevation(moment, city.latitude, city.longitude) < -0.833
    hour = _hours(moment.astimezone(CITY_TZ))
    level = (0.5 if 0.5 <= hour < 5.0 else 1.0) if dark else 0.0
    return {"powerState": "on" if dark else "off", "illuminanceLevel": level,
            "powerConsumption": round(2.0 + 88.0 * level, 1)}


_PATTERNS = {AIR_QUALITY.key: _air_quality, NOISE.key: _noise, TRAFFIC.key: _traffic,
             PARKING.key: _parking, WASTE.key: _waste, STREETLIGHT.key: _streetlight}


def clean_values(city: City, sensor: Sensor, moment: datetime) -> Values:
    """What a healthy sensor measures at ``moment``."""
    return _PATTERNS[sensor.kind.key](city, sensor, moment)


# --- faults and gaps ------------------------------------------------------------------------

def is_silent(city: City, sensor: Sensor, moment: datetime, faults: FaultConfig) -> bool:
    """True while the sensor is in a gap (it sends nothing)."""
    if faults.gap_rate <= 0:
        return False
    hour = _stamp(moment) // 3600
    mean_length = (1 + faults.max_gap_hours) / 2
    start_rate = faults.gap_rate / mean_length
    for back in range(faults.max_gap_hours):
        if unit(city.seed, sensor.device_id, "gap", hour - back) < start_rate:
            length = 1 + int(unit(city.seed, sensor.device_id, "gap-length", hour - back)
                             * faults.max_gap_hours)
            if back < length:
                return True
    return False


def observe(city: City, sensor: Sensor, moment: datetime,
            faults: FaultConfig = NO_FAULTS) -> Observation | None:
    """The reading a sensor sends at ``moment`` (None during a gap), faults included."""
    if is_silent(city, sensor, moment, faults):
        return None
    hour = _stamp(moment) // 3600
    if unit(city.seed, sensor.device_id, "stuck", hour) < faults.stuck_rate:
        start = datetime.fromtimestamp(hour * 3600, UTC)
        return Observation(sensor, moment, clean_values(city, sensor, start), "stuck")
    values = clean_values(city, sensor, moment)
    spikeable = [a.name for a in sensor.kind.attributes if a.spikeable]
    if spikeable and unit(city.seed, sensor.device_id, "spike", _stamp(moment)) < \
            faults.spike_rate:
        name = spikeable[int(unit(city.seed, sensor.device_id, "spike-attr", _stamp(moment))
                             * len(spikeable))]
        factor = 3 + 4 * unit(city.seed, sensor.device_id, "spike-size", _stamp(moment))
        values[name] = round(values[name] * factor + 1, 1)
        return Observation(sensor, moment, values, "spike")
    return Observation(sensor, moment, values)
