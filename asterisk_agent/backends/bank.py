"""The bank's backend: caller identification by account and PIN, balances, fraud reports.

- ``POST /identity`` ``{"account", "pin"}``: 200 ``{"customer_id", "name"}``; 401 ``mismatch`` (a wrong PIN and
  an unknown account look the same, so callers cannot probe for accounts). The third failure in a row (still
  answered 401) locks the account: from then on every attempt, with the right PIN too, gets 423 ``locked``
  until :meth:`BankService.unlock`. A success before that resets the count.
- ``GET /accounts/{account}/balance`` with ``X-Customer-Id``: 200 ``{"account", "balance", "currency",
  "as_of"}``; 403 ``forbidden`` when the header is missing or names someone else (or the account is unknown).
- ``POST /fraud-reports`` ``{"account", "reason"}``: 201 ``{"id": "F-000001"}``; 404 ``not_found``;
  idempotent by ``Idempotency-Key``.

Balances are decimal strings with two places, never floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from aiohttp import web

from asterisk_agent.backends.app import Answer, ReferenceService, text_field
from asterisk_agent.backends.faults import ApiError, FaultState, read_object

CUSTOMER_HEADER = "X-Customer-Id"
MAX_PIN_FAILURES = 3


@dataclass(frozen=True, slots=True)
class SeedAccount:
    number: str
    pin: str
    holder: str
    balance: str
    currency: str
    customer_id: str


SEED_ACCOUNTS: tuple[SeedAccount, ...] = (
    SeedAccount("12345678", "4321", "Alice Martin", "1520.40", "USD", "CUST-1001"),
    SeedAccount("87654321", "1111", "Bob Stone", "20.05", "USD", "CUST-1002"),
    SeedAccount("11223344", "9876", "Carol Diaz", "-45.00", "USD", "CUST-1003"),
)


@dataclass(frozen=True, slots=True)
class FraudReport:
    id: str
    account: str
    reason: str
    reported_at: str


class BankService(ReferenceService):
    name: ClassVar[str] = "bank"

    def __init__(self, *, today: date | None = None, faults: FaultState | None = None,
                 accounts: tuple[SeedAccount, ...] = SEED_ACCOUNTS) -> None:
        super().__init__(today=today, faults=faults)
        self.accounts = {account.number: account for account in accounts}
        self.balances = {account.number: Decimal(account.balance) for account in accounts}
        self.failures: dict[str, int] = {}  # PIN failures in a row, per account number as given
        self.fraud_reports: dict[str, FraudReport] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/identity", self._identify),
            web.get("/accounts/{account}/balance", self._balance),
            web.post("/fraud-reports", self._report_fraud),
        ]

    def locked(self, account: str) -> bool:
        return self.failures.get(account, 0) >= MAX_PIN_FAILURES

    def unlock(self, account: str) -> None:
        self.failures.pop(account, None)

    async def _identify(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        number, pin = text_field(body, "account", max_length=32), text_field(body, "pin", max_length=16)
        if self.locked(number):
            raise ApiError(423, "locked")
        account = self.accounts.get(number)
        if account is None or account.pin != pin:
            self.failures[number] = self.failures.get(number, 0) + 1
            raise ApiError(401, "mismatch")
        self.failures.pop(number, None)
        return web.json_response({"customer_id": account.customer_id, "name": account.holder})

    async def _balance(self, request: web.Request) -> web.Response:
        number = request.match_info["account"]
        account = self.accounts.get(number)
        if account is None or request.headers.get(CUSTOMER_HEADER) != account.customer_id:
            raise ApiError(403, "forbidden")
        return web.json_response({
            "account": number, "balance": f"{self.balances[number]:.2f}", "currency": account.currency,
            "as_of": datetime.now(UTC).isoformat(timespec="seconds"),
        })

    async def _report_fraud(self, request: web.Request) -> web.Response:
        body = await read_object(request)
        return self.idempotent(request, lambda: self._report_now(body))

    def _report_now(self, body: dict[str, Any]) -> Answer:
        number, reason = text_field(body, "account", max_length=32), text_field(body, "reason", max_length=2000)
        if number not in self.accounts:
            raise ApiError(404, "not_found")
        report = FraudReport(f"F-{len(self.fraud_reports) + 1:06d}", number, reason,
                             datetime.now(UTC).isoformat(timespec="seconds"))
        self.fraud_reports[report.id] = report
        return 201, {"id": report.id}
