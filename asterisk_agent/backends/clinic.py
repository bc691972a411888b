"""The clinic's scheduling backend: free slots, appointments and a waiting list.

The calendar is computed, not stored, so a test can predict any day: Monday to Friday 09:00 to 16:30 every
30 minutes, Saturday 09:00 to 11:30, Sunday closed. Some slots are booked before anyone calls: the ``i``-th slot
of a day is taken when ``(day of year + i) % 3 == 0``, and every slot of the 1st of each month is taken (a day
with nothing free). Dates before ``today`` or more than 90 days ahead are out of range.

- ``GET /availability?date=YYYY-MM-DD``: 200 ``{"date", "times"}``; 400 ``bad_date``; 422 ``date_out_of_range``.
- ``POST /appointments`` ``{"date", "time", "name", "phone"}``: 201 ``{"id": "A-000001", "date", "time"}``;
  409 ``taken``; 422 ``no_such_slot`` (a time the clinic does not offer that day) or ``date_out_of_range``;
  400 on a missing or bad field. Idempotent by ``Idempotency-Key``.
- ``POST /waitlist`` ``{"date", "name", "phone"}``: 202 ``{"id": "W-000001", "position"}``; idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar

from aiohttp import web

from asterisk_agent.backends.app import Answer, ReferenceService, parse_iso_date, phone_field, text_field
from asterisk_agent.backends.faults import ApiError, FaultState, read_object

WEEKDAY_SLOTS: tuple[str, ...] = tuple(f"{hour:02d}:{minute:02d}" for hour in range(9, 17) for minute in (0, 30))
SATURDAY_SLOTS: tuple[str, ...] = WEEKDAY_SLOTS[:6]  # 09:00 to 11:30
HORIZON_DAYS = 90
_TIME = re.compile(r"^\d{2}:\d{2}$")


def opening_slots(day: date) -> tuple[str, ...]:
    """Every slot the clinic offers on ``day``, booked or not."""
    weekday = day.weekday()
    if weekday < 5:
        return WEEKDAY_SLOTS
    return SATURDAY_SLOTS if weekday == 5 else ()


def prebooked_slots(day: date) -> frozenset[str]:
    """The slots of ``day`` already taken in the seed data."""
    slots = opening_slots(day)
    if day.day == 1:
        return frozenset(slots)
    day_of_year = day.timetuple().tm_yday
    return frozenset(slot for index, slot in enumerate(slots) if (day_of_year + index) % 3 == 0)


@dataclass(frozen=True, slots=True)
class Appointment:
    id: str
    date: date
    time: str
    name: str
    phone: str


@dataclass(frozen=True, slots=True)
class WaitlistEntry:
    id: str
    date: date
    name: str
    phone: str
    position: int


class ClinicService(ReferenceService):
    name: ClassVar[str] = "clinic"

    def __init__(self, *, today: date | None = None, faults: FaultState | None = None) -> None:
        super().__init__(today=today, faults=faults)
        self.appointments: dict[str, Appointment] = {}
        self.waitlist: dict[date, list[WaitlistEntry]] = {}
        self._waitlist_ids = 0

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/availability", self._availability),
            web.post("/appointments", self._book),
            web.post("/waitlist", self._join_waitlist),
        ]

    def free_slots(self, day: date) -> list[str]:
        """The slots of ``day`` nobody has: the calendar less the seed bookings and this service's own."""
        taken = prebooked_slots(day) | {a.time for a in self.appointments.values() if a.date == day}
        return [slot for slot in opening_slots(day) if slot not in taken]

    def _day(self, value: object) -> date:
        day = parse_iso_date(value) if isinstance(value, str) else None
        if day is None:
            raise ApiError(400, "bad_date")
        if not self.today <= day <= self.today + timedelta(days=HORIZON_DAYS):
            raise ApiError(422, "date_out_of_range")
        return day

    async def _availability(self, request: web.Request) -> web.Response:
        day = self._day(request.query.get("date"))
        return web.json_response({"date": day.isoformat(), "times": self.free_slots(day)})

    async def _book(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        return self.idempotent(request, lambda: self._book_now(body))

    def _book_now(self, body: dict[str, Any]) -> Answer:
        if body.get("date") is None:
            raise ApiError(400, "missing_field", field="date")
        day = self._day(body["date"])
        time = text_field(body, "time", max_length=5)
        if not _TIME.match(time):
            raise ApiError(400, "bad_field", field="time")
        name, phone = text_field(body, "name"), phone_field(body)
        if time not in opening_slots(day):
            raise ApiError(422, "no_such_slot")
        if time not in self.free_slots(day):
            raise ApiError(409, "taken")
        appointment = Appointment(f"A-{len(self.appointments) + 1:06d}", day, time, name, phone)
        self.appointments[appointment.id] = appointment
        return 201, {"id": appointment.id, "date": day.isoformat(), "time": time}

    async def _join_waitlist(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        return self.idempotent(request, lambda: self._join_now(body))

    def _join_now(self, body: dict[str, Any]) -> Answer:
        if body.get("date") is None:
            raise ApiError(400, "missing_field", field="date")
        day = self._day(body["date"])
        name, phone = text_field(body, "name"), phone_field(body)
        queue = self.waitlist.setdefault(day, [])
        self._waitlist_ids += 1
        entry = WaitlistEntry(f"W-{self._waitlist_ids:06d}", day, name, phone, len(queue) + 1)
        queue.append(entry)
        return 202, {"id": entry.id, "position": entry.position}
