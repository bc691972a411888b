"""The insurer's CRM backend: policy look-up and first notice of loss.

- ``GET /policies/{number}``: 200 ``{"number", "holder", "type", "active"}``; 404 ``not_found``. The number is
  matched without regard to case or surrounding blanks ("pol1234" is POL1234), as a caller spells it.
- ``POST /claims`` ``{"policy", "what", "when", "where"}`` (``when``: ``YYYY-MM-DD``): 201 ``{"claim_id":
  "C-000001", "risk", "follow_up": {"date", "time"}}``; 400 on a missing or bad field; 404 ``not_found`` for an
  unknown policy; 422 ``when_in_future`` for an incident after ``today``. Idempotent by ``Idempotency-Key``.
  Risk is ``high`` when ``what`` mentions fire, flood, injury or theft (:data:`HIGH_RISK_WORDS`) or the policy
  has lapsed; the follow-up call is on the next working day after ``today`` at 10:00.
- ``GET /claims/{id}``: the stored claim (with its policy, what, when, where and status); 404 ``not_found``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, ClassVar

from aiohttp import web

from asterisk_agent.backends.app import Answer, ReferenceService, parse_iso_date, text_field
from asterisk_agent.backends.faults import ApiError, FaultState, read_object

FOLLOW_UP_TIME = "10:00"
HIGH_RISK_WORDS = frozenset({
    "fire", "fires", "flood", "floods", "flooded", "flooding", "injury", "injuries", "injured",
    "theft", "thefts", "stolen",
})
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True, slots=True)
class SeedPolicy:
    number: str
    holder: str
    type: str
    active: bool


SEED_POLICIES: tuple[SeedPolicy, ...] = (
    SeedPolicy("POL1234", "Dana Lee", "home", True),
    SeedPolicy("POL5678", "Eve Park", "auto", True),
    SeedPolicy("POL9999", "Frank Moss", "home", False),  # lapsed
)


def next_working_day(day: date) -> date:
    """The first Monday-to-Friday day after ``day``."""
    following = day + timedelta(days=1)
    while following.weekday() >= 5:
        following += timedelta(days=1)
    return following


def claim_risk(what: str, policy: SeedPolicy) -> str:
    """``high`` for the losses a human adjuster must call back about (or a lapsed policy), ``low`` otherwise."""
    words = set(_WORD.findall(what.lower()))
    return "high" if words & HIGH_RISK_WORDS or not policy.active else "low"


class InsuranceService(ReferenceService):
    name: ClassVar[str] = "insurance"

    def __init__(self, *, today: date | None = None, faults: FaultState | None = None,
                 policies: tuple[SeedPolicy, ...] = SEED_POLICIES) -> None:
        super().__init__(today=today, faults=faults)
        self.policies = {policy.number: policy for policy in policies}
        self.claims: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/policies/{number}", self._policy),
            web.post("/claims", self._file_claim),
            web.get("/claims/{claim_id}", self._claim),
        ]

    def find_policy(self, number: str) -> SeedPolicy:
        policy = self.policies.get(number.strip().upper())
        if policy is None:
            raise ApiError(404, "not_found")
        return policy

    async def _policy(self, request: web.Request) -> web.Response:
        policy = self.find_policy(request.match_info["number"])
        return web.json_response({"number": policy.number, "holder": policy.holder, "type": policy.type,
                                  "active": policy.active})

    async def _file_claim(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        return self.idempotent(request, lambda: self._file_now(body))

    def _file_now(self, body: dict[str, Any]) -> Answer:
        number = text_field(body, "policy", max_length=32)
        what, where = text_field(body, "what", max_length=2000), text_field(body, "where", max_length=500)
        when = parse_iso_date(text_field(body, "when", max_length=10))
        if when is None:
            raise ApiError(400, "bad_field", field="when")
        policy = self.find_policy(number)
        if when > self.today:
            raise ApiError(422, "when_in_future")
        follow_up = {"date": next_working_day(self.today).isoformat(), "time": FOLLOW_UP_TIME}
        claim_id = f"C-{len(self.claims) + 1:06d}"
        risk = claim_risk(what, policy)
        self.claims[claim_id] = {
            "claim_id": claim_id, "policy": policy.number, "what": what, "when": when.isoformat(), "where": where,
            "risk": risk, "follow_up": follow_up, "status": "open",
        }
        return 201, {"claim_id": claim_id, "risk": risk, "follow_up": follow_up}

    async def _claim(self, request: web.Request) -> web.Response:
        claim = self.claims.get(request.match_info["claim_id"])
        if claim is None:
            raise ApiError(404, "not_found")
        return web.json_response(claim)
