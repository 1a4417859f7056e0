"""The category ids inspection emits, checked against the taxonomy file when imported."""

from __future__ import annotations

from sharewall.taxonomy import load_taxonomy

PHONE = "contact.phone_number"
EMAIL = "contact.email"
NAME = "contact.name"
POSTAL_ADDRESS = "contact.postal_address"
EMPLOYMENT = "account.employment"
SMS_CONSENT = "mobile.sms_consent"
DEVICE_STATUS = "mobile.device_status"
ROAMING = "mobile.roaming_status"
CARRIER = "mobile.carrier"
DEVICE_ID = "mobile.device_id"
NUMBER_VALIDITY = "mobile.number_validity"
LOCATION_PRECISE = "location.precise"
LOCATION_COUNTRY = "location.country"
IP_ADDRESS = "network.ip_address"
CONTENT = "comms.content"
USAGE = "comms.usage"
PAYMENT = "payment.account_number"
GOVERNMENT_ID = "government_id"
SECRET = "credentials.secret"  # noqa: S105 - a category id, not a password

EMITTED = frozenset(
    {
        PHONE,
        EMAIL,
        NAME,
        POSTAL_ADDRESS,
        EMPLOYMENT,
        SMS_CONSENT,
        DEVICE_STATUS,
        ROAMING,
        CARRIER,
        DEVICE_ID,
        NUMBER_VALIDITY,
        LOCATION_PRECISE,
        LOCATION_COUNTRY,
        IP_ADDRESS,
        CONTENT,
        USAGE,
        PAYMENT,
        GOVERNMENT_ID,
        SECRET,
    }
)


def _check_against_taxonomy() -> None:
    # The taxonomy is the single source of truth: a renamed category must fail at import, not
    # silently produce findings no policy rule knows.
    unknown = sorted(c for c in EMITTED if not load_taxonomy().is_category(c))
    if unknown:
        raise RuntimeError(f"inspection emits categories missing from the taxonomy: {unknown}")


_check_against_taxonomy()
