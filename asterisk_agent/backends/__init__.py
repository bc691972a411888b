"""Reference backends: small HTTP services (clinic scheduling, bank, insurance CRM) with switchable faults.

The project ships them so its demo and tests can run the reference scenarios against real HTTP backends, in
memory and with deterministic seed data, and make them fail the ways real ones do (429, 503, slow answers,
dropped connections, bodies that are not JSON, a capacity limit). :class:`ReferenceBackends` runs all three.
"""

from asterisk_agent.backends.app import ReferenceService, ServiceServer
from asterisk_agent.backends.bank import SEED_ACCOUNTS, BankService, SeedAccount
from asterisk_agent.backends.clinic import ClinicService, opening_slots, prebooked_slots
from asterisk_agent.backends.faults import FAULT_MODES, FaultMode, FaultState, Stats
from asterisk_agent.backends.insurance import SEED_POLICIES, InsuranceService, SeedPolicy
from asterisk_agent.backends.runner import SERVICE_NAMES, ReferenceBackends

__all__ = [
    "FAULT_MODES",
    "SEED_ACCOUNTS",
    "SEED_POLICIES",
    "SERVICE_NAMES",
    "BankService",
    "ClinicService",
    "FaultMode",
    "FaultState",
    "InsuranceService",
    "ReferenceBackends",
    "ReferenceService",
    "SeedAccount",
    "SeedPolicy",
    "ServiceServer",
    "Stats",
    "opening_slots",
    "prebooked_slots",
]
