"""Geography: great-circle distance and the trail of an entity's located events.

>>> round(haversine_km(51.5074, -0.1278, 48.8566, 2.3522))   # London - Paris
344
>>> trail = LocationTrail(capacity=2)
>>> trail.add(1_000, 51.5, -0.13); trail.add(5_000, 48.86, 2.35)
>>> trail.previous(4_000)       # latest located event at or before t=4000
(1000, 51.5, -0.13)
>>> trail.previous(500) is None
True
"""

from __future__ import annotations

import math
from bisect import bisect_right

_EARTH_RADIUS_KM = 6371.0088
_RAD = math.pi / 180.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres."""
    dlat = (lat2 - lat1) * _RAD
    dlon = (lon2 - lon1) * _RAD
    a = math.sin(dlat * 0.5) ** 2 + math.cos(lat1 * _RAD) * math.cos(lat2 * _RAD) * math.sin(dlon * 0.5) ** 2
    return 2.0 * _EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


class LocationTrail:
    """The last ``capacity`` located events, in event-time order."""

    __slots__ = ("capacity", "lats", "lons", "times")

    def __init__(
        self,
        capacity: int,
        times: list[int] | None = None,
        lats: list[float] | None = None,
        lons: list[float] | None = None,
    ) -> None:
        self.capacity = capacity
        self.times: list[int] = times if times is not None else []
        self.lats: list[float] = lats if lats is not None else []
        self.lons: list[float] = lons if lons is not None else []

    def previous(self, event_time_ms: int) -> tuple[int, float, float] | None:
        """The latest located event at or before ``event_time_ms``, if remembered."""
        times = self.times
        if times and times[-1] <= event_time_ms:
            return times[-1], self.lats[-1], self.lons[-1]
        index = bisect_right(times, event_time_ms)
        if index == 0:
            return None
        return times[index - 1], self.lats[index - 1], self.lons[index - 1]

    def add(self, event_time_ms: int, lat: float, lon: float) -> None:
        times = self.times
        index = len(times) if not times or times[-1] <= event_time_ms else bisect_right(times, event_time_ms)
        times.insert(index, event_time_ms)
        self.lats.insert(index, lat)
        self.lons.insert(index, lon)
        if len(times) > self.capacity:
            del times[0], self.lats[0], self.lons[0]
