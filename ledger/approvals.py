"""A customer approval checked before an authority signs it: refused when it names no licence, a warning
when it may be a mistake.

Refused (`BadInput`, nothing signed): an empty or blank licence. Warned, and recorded all the same: a
`valid_until` already past when the approval is logged (it holds only for steps dated before then, such
as records of past shipments), an id that is not a registered participant (an authority may approve a
customer before its registration is logged), and a participant without the `customer` role.
"""

from __future__ import annotations

from ledger import views
from ledger.errors import BadInput
from ledger.store import Store
from ledger.values import format_time


def check_approval(customer_id: str, license_: str, valid_until: int | None, now_us: int) -> list[str]:
    """Refuse an approval without a licence; return the warnings for one already past."""
    if not license_.strip():
        raise BadInput(f"the approval of {customer_id} names no licence: give the export licence")
    if valid_until is not None and valid_until <= now_us:
        return [f"the approval of {customer_id} ends at {format_time(valid_until)}, already past: it holds "
                "only for steps dated before then"]
    return []


def registration_warnings(store: Store, customer_id: str, now_us: int) -> list[str]:
    """Warnings for an approval of an id the ledger does not know as a customer."""
    participant = views.current(store, now_us).participants.get(customer_id)
    if participant is None:
        return [f"{customer_id} is not a registered participant (yet): the approval is recorded, and "
                "counts once it is registered with the customer role"]
    if "customer" not in participant.roles:
        return [f"{customer_id} does not hold the customer role (it has {', '.join(participant.roles)}): "
                "the approval is recorded all the same"]
    return []
