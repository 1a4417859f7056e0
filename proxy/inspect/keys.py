"""Key-name tables: which field names hint at which kind of personal data (data, not code).

Keys are normalised once (camelCase → snake_case, lowercase, `-`/space/`.` → `_`) and looked up
"squashed" (underscores removed) so `phoneNumber`, `phone_number`, `Phone-Number` are one key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from proxy.inspect.credentials import AUTH_FIELDS_GENERIC, AUTH_FIELDS_SECRET
from proxy.inspect.encoded import strip_invisible


class Rule:
    """What a key says about its value (names of the rules applied in `fields.py`)."""

    PHONE = "phone"
    PHONE_GENERIC = "phone_generic"  # `number`: a phone number unless it is an order's or a card's
    EMAIL = "email"
    NAME = "name"
    NAME_CTX = "name_ctx"  # `name`: a person's name only in a person context
    ADDRESS = "address"
    ADDRESS_CTX = "address_ctx"  # `city`, `zip`: part of an address only in an address context
    HASHED_ADDRESS = "hashed_address"  # CAPI `ct`, `st`, `zp`: only when hashed
    EMPLOYMENT = "employment"
    EMPLOYMENT_CTX = "employment_ctx"  # `title` only in a person context
    IP = "ip"
    IMEI = "imei"
    IMSI = "imsi"
    ICCID = "iccid"
    DEVICE_ID = "device_id"  # generic device id: only when the value checks as IMEI/ICCID
    CARD = "card"
    BANK = "bank"
    SSN = "ssn"
    GOV_ID = "gov_id"
    LAT_LNG = "lat_lng"  # one half of a pair: needs its partner beside it
    COORDINATES = "coordinates"  # a pair in one value
    CELL = "cell"
    COUNTRY = "country"
    COUNTRY_CTX = "country_ctx"
    CONSENT = "consent"
    CONSENT_CTX = "consent_ctx"  # generic opt-in keys: SMS consent only in an SMS context
    KEYWORD = "keyword"
    DEVICE_STATUS = "device_status"
    DEVICE_STATUS_CTX = "device_status_ctx"
    ROAMING = "roaming"
    CARRIER = "carrier"
    CARRIER_CTX = "carrier_ctx"
    VALIDITY = "validity"
    VALIDITY_CTX = "validity_ctx"
    CONTENT = "content"
    # `contents`: a message's texts by language (OneSignal) as an object; as a list, the items
    # an ad event counts (Meta's and TikTok's `contents`), whose texts are judged on their own.
    CONTENT_MAP = "content_map"
    # `alert`: a notification's text as a string (APNs, Airship); as an object, a monitor's settings.
    CONTENT_TEXT = "content_text"
    CDR = "cdr"
    CDR_CTX = "cdr_ctx"
    SECRET = "secret"  # noqa: S105 - a rule name, not a password
    NEGATIVE = "negative"  # ids, amounts, timestamps, digests: never personal by value
    VENDOR_CREDENTIAL = "vendor_credential"  # a credential name: authentication at the top
    API_SECRET = "api_secret"  # noqa: S105 - a secret credential name: authentication at the top, else a leak
    GRAPHQL = "graphql"  # `query`: a GraphQL document when it looks like one
    AD_ID = "ad_id"  # IDFA, GAID/AAID, Meta's `madid`: a mobile advertising id (a UUID) or its hash
    ID_TYPE = "id_type"  # `schema`, `idType`: names the kind of the identifiers sent beside it
    CONSENT_PHONE = "consent_phone"  # `OptedOutNumber`: a number that is an opt-in/out record
    ACTION = "action"  # `Action=OptInPhoneNumber`: an operation that records SMS consent
    URL = "url"  # `StatusCallback`, `VoiceUrl`, `link`: a URL whose query and path are judged


def _table(*groups: tuple[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for rule, words in groups:
        for word in words.split():
            out[word.replace("_", "")] = rule
    return out


# Exact keys (snake_case as written here; looked up squashed).
EXACT_RULES: dict[str, str] = _table(
    (
        Rule.PHONE,
        "to from phone phone_number msisdn mobile mobile_number mobile_phone destination destinations "
        "recipient recipients destination_number dst src receiver sender tel "
        "telephone telephone_number cell_phone cellphone caller callee caller_id called calling "
        "called_number calling_number originator source_addr destination_addr dest_addr a_number "
        "b_number contact_number whatsapp_number to_number from_number msisdns phones phone_numbers "
        "ani dnis home_phone work_phone landline fax customer_phone user_phone sms_number mdn "
        "subscriber_number ph wa_id",  # WhatsApp's wa_id is the number
    ),
    (
        Rule.EMAIL,
        "email email_address e_mail mail emails email_addresses contact_email customer_email "
        "user_email cc bcc em hashed_email email_sha256 sha256_email email_hash "
        "sha256_email_address hashed_email_address hashed_emails",
    ),
    (
        Rule.PHONE,
        "hashed_phone_number hashed_phone phone_sha256 sha256_phone phone_hash hashed_msisdn "
        "sha256_phone_number hashed_phone_numbers",
    ),
    (
        Rule.NAME,
        "first_name last_name full_name customer_name given_name family_name surname middle_name "
        "contact_name recipient_name display_name nickname maiden_name legal_name cardholder_name "
        "account_holder_name billing_name shipping_name patient_name owner_name beneficiary_name payee_name shopper_name holder_name fn ln "
        "hashed_first_name hashed_last_name sha256_first_name sha256_last_name firstname lastname fname lname",
    ),
    (Rule.PHONE_GENERIC, "number numbers"),
    (Rule.NAME_CTX, "name names"),
    (
        Rule.ADDRESS,
        "address street street_address street1 street2 address_line1 address_line2 address_line_1 "
        "address_line_2 address1 address2 line1 line2 postal_address home_address shipping_address "
        "billing_address mailing_address residential_address street_name house_number addr "
        "address_lines formatted_address hashed_street_address",
    ),
    (
        Rule.ADDRESS_CTX,
        "postal_code postcode zip zip_code zipcode city state region province locality district "
        "unit building floor suburb town",
    ),
    (Rule.HASHED_ADDRESS, "ct st zp hashed_city hashed_zip hashed_postal_code"),
    (
        Rule.EMPLOYMENT,
        "company company_name job_title employer employer_name occupation job job_role "
        "organization_name workplace",
    ),
    (Rule.EMPLOYMENT_CTX, "title"),
    (
        Rule.IP,
        "ip ip_address client_ip_address client_ip ipv4 ipv6 remote_addr remote_ip user_ip "
        "source_ip device_ip last_ip x_forwarded_for forwarded_for real_ip x_real_ip "
        "true_client_ip cf_connecting_ip origin_ip customer_ip ip_addr user_ip_address "
        "forwarded x_client_ip",
    ),
    (Rule.IMEI, "imei imeisv device_imei meid"),
    (Rule.IMSI, "imsi"),
    (Rule.ICCID, "iccid sim_serial sim_serial_number"),
    (Rule.DEVICE_ID, "device_id hardware_id equipment_id serial_number"),
    (
        Rule.CARD,
        "card_number pan cc_number credit_card credit_card_number card_no cardnumber "
        "primary_account_number debit_card",
    ),
    (
        Rule.BANK,
        "iban bank_account bank_account_number account_number acct_number account_no "
        "routing_number sort_code bsb bank_number",
    ),
    (Rule.SSN, "ssn social_security_number social_security ssn_last4"),
    (
        Rule.GOV_ID,
        "nric fin national_id national_id_number passport passport_number passport_no "
        "driver_license drivers_license driving_licence driver_license_number tax_id tin "
        "taxpayer_id nid hkid id_card id_card_number identity_number identity_card "
        "national_identity_number aadhaar nino personal_number citizen_id voter_id government_id "
        "id_document id_document_number identity_document identity_document_number",
    ),
    (Rule.LAT_LNG, "lat lng lon latitude longitude"),
    (Rule.COORDINATES, "coordinates coords latlng lat_lng lat_long geo geolocation location"),
    (
        Rule.CELL,
        "cell_id cellid cgi ecgi ncgi cell_global_identity lac enb_id enodeb_id eci cell_tower "
        "serving_cell",
    ),
    (
        Rule.COUNTRY,
        "country_of_location current_country visited_country location_country roaming_country "
        "country_of_residence",
    ),
    (
        Rule.COUNTRY_CTX,
        "country country_code country_iso country_name iso_country iso_country_code",
    ),
    (
        Rule.CONSENT,
        "sms_opt_in sms_optin sms_consent sms_subscribed sms_subscription sms_subscription_status "
        "sms_marketing_consent sms_opted_in sms_opt_out sms_unsubscribed "
        # CleverTap's `MSG-sms`, `MSG-whatsapp`: whether the user may be messaged that way.
        "msg_sms msg_whatsapp msg_mms",
    ),
    (
        Rule.CONSENT_CTX,
        "opt_in optin opted_in opted_in_at opt_in_at opt_in_date opt_in_source opt_in_method "
        "opt_out opted_out optout consent consent_timestamp consent_date consented_at "
        "consent_source consent_status subscribed subscription_status subscription_state "
        "subscription_groups unsubscribed marketing_consent",
    ),
    (Rule.KEYWORD, "keyword opt_in_keyword sms_keyword opt_out_type"),  # Twilio `OptOutType`
    (
        Rule.CONSENT_PHONE,
        "opted_out_number opted_in_number opt_out_number opt_in_number opted_out_phone_number "
        "opted_in_phone_number opted_out_numbers",
    ),
    (Rule.ACTION, "action"),
    (
        Rule.AD_ID,
        "idfa gaid aaid oaid adid gps_adid advertising_id advertising_identifier mobile_ad_id "
        "mobile_advertising_id google_advertising_id android_advertising_id madid maid maids ifa "
        "aifa amazon_aid fire_adid hashed_maids hashed_maid hashed_mobile_ad_id mobile_id",
    ),
    # Meta Custom Audiences' `schema` (`EMAIL_SHA256`, ...), LinkedIn's `idType` (`SHA256_EMAIL`).
    (Rule.ID_TYPE, "schema id_type identifier_type user_id_type"),
    (
        Rule.DEVICE_STATUS,
        "reachable is_reachable reachability device_status handset_status handset_state "
        "subscriber_status presence device_state",
    ),
    (Rule.DEVICE_STATUS_CTX, "status state availability available online"),
    (
        Rule.ROAMING,
        "roaming is_roaming roaming_status visited_network vlr vlr_number msc msc_number "
        "serving_msc roaming_network serving_network",
    ),
    (
        Rule.CARRIER,
        "carrier_name mccmnc mcc_mnc ported is_ported porting porting_status original_network "
        "original_carrier current_carrier original_operator home_network network_name "
        "network_code mobile_country_code mobile_network_code operator_name hni plmn",
    ),
    (Rule.CARRIER_CTX, "carrier operator network mcc mnc"),
    (
        Rule.VALIDITY,
        "line_type number_type number_status phone_type valid_number is_valid_number "
        "line_type_intelligence number_validity phone_valid",
    ),
    (Rule.VALIDITY_CTX, "valid is_valid validity"),
    (
        Rule.CONTENT,
        "body text message content msg sms_text sms_body message_body message_text transcript "
        "transcription voicemail caption html html_body text_body plain_text html_content "
        "text_content short_message message_payload twiml ssml",
    ),
    (Rule.CONTENT_MAP, "contents"),
    (Rule.CONTENT_TEXT, "alert"),
    (Rule.GRAPHQL, "query"),
    (
        Rule.CDR,
        "cdr cdrs call_detail_record call_detail_records call_records call_record call_log "
        "call_logs call_duration call_status completion_status hangup_cause billsec "
        "billable_seconds",
    ),
    (
        Rule.CDR_CTX,
        "duration start_time end_time answer_time answered_at disconnect_reason call_start "
        "call_end setup_time started_at ended_at",
    ),
    (
        Rule.SECRET,
        "password passwd pwd private_key secret_access_key aws_secret_access_key passphrase",
    ),
    # Where APIs take their callers' credentials: one table, in credentials.py.
    (Rule.VENDOR_CREDENTIAL, AUTH_FIELDS_GENERIC),
    (Rule.API_SECRET, AUTH_FIELDS_SECRET),
)

# Handset states an HLR / reachability API answers (`status` means this only in a mobile context).
HANDSET_STATES = frozenset(
    [
        "DELIVERED",
        "ABSENT",
        "ABSENT_SUBSCRIBER",
        "REACHABLE",
        "UNREACHABLE",
        "AVAILABLE",
        "UNAVAILABLE",
        "ONLINE",
        "OFFLINE",
        "CONNECTED",
        "DETACHED",
        "ATTACHED",
        "IDLE",
        "BUSY",
        "UNKNOWN_SUBSCRIBER",
        "SWITCHED_OFF",
        "POWERED_OFF",
        "ROAMING",
        "NOT_REACHABLE",
    ]
)
# SMS keywords that are opt-in / opt-out records (CTIA's and carriers' conventions, the FCC's
# 2024 revocation words), as `opt_keyword` writes them (no case, spaces, hyphens or final `.`/`!`).
# HELP and INFO ask for help: no consent.
OPT_KEYWORDS = frozenset(
    [
        "START",
        "STOP",
        "YES",
        "UNSTOP",
        "SUBSCRIBE",
        "UNSUBSCRIBE",
        "JOIN",
        "END",
        "QUIT",
        "CANCEL",
        "STOPALL",
        "OPTOUT",
        "OPTIN",
        "REVOKE",
    ]
)
# The keywords that mean nothing but an SMS opt-out or opt-in: an inbound message of just one of
# them is consent wherever it is relayed. The others (a button's `Cancel`, a link's
# `Unsubscribe`, a reply's `Yes`) are consent only in a text message's context.
SMS_ONLY_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSTOP"})
# The longest message read as a keyword (`" Opt-Out! "`); `_native.c` leaves shorter message
# bodies to `fields._content` (it is handed this number).
OPT_KEYWORD_MAX = 16


def opt_keyword(value: str) -> str:
    """A message as a keyword: `" Stop. "` → `STOP`, `"opt-out"` → `OPTOUT`."""
    return value.strip().rstrip(".!").upper().replace("-", "").replace(" ", "")


# A key containing one of these tokens is an identifier, amount, time or digest: values under it
# are never read as phone numbers, card numbers or ids (a 10-digit `order_id` is not a phone).
NEGATIVE_TOKENS = frozenset(
    [
        "id",
        "ids",
        "uuid",
        "guid",
        "order",
        "invoice",
        "amount",
        "price",
        "total",
        "count",
        "qty",
        "quantity",
        "timestamp",
        "ts",
        "time",
        "date",
        "created",
        "updated",
        "at",
        "seq",
        "sequence",
        "version",
        "ver",
        "build",
        "ref",
        "reference",
        "sku",
        "hash",
        "sha",
        "sha1",
        "sha256",
        "md5",
        "checksum",
        "digest",
        "etag",
        "signature",
        "nonce",
        "size",
        "length",
        "bytes",
        "port",
        "pin",
        "otp",
        "cost",
        "balance",
        "limit",
        "offset",
        "page",
        "index",
        "idx",
        "num_segments",
        "segments",
        "code",
        "currency",
        "tracking",
        "batch",
        "job_id",
        "template",
        "campaign",
        "product",
        "item",
    ]
)

# Our own infrastructure: an `ip_allowlist` of egress NAT addresses is not anyone's IP address.
INFRASTRUCTURE_TOKENS = frozenset(
    [
        "allowlist",
        "whitelist",
        "blocklist",
        "blacklist",
        "denylist",
        "cidr",
        "cidrs",
        "subnet",
        "subnets",
        "egress",
        "nat",
        "server",
        "servers",
        "gateway",
        "nameserver",
        "dns",
        "webhook",
        "callback",
    ]
)

# Token fallbacks for keys not in EXACT_RULES (`customer_phone`, `hashedPhoneNumber`, ...).
_PHONE_TOKENS = frozenset({"phone", "msisdn", "mobile", "telephone", "cellphone", "whatsapp"})
_PERSON_NAME_PREFIXES = frozenset(
    [
        "first",
        "last",
        "full",
        "given",
        "family",
        "middle",
        "customer",
        "contact",
        "recipient",
        "user",
        "person",
        "holder",
        "cardholder",
        "patient",
        "member",
        "legal",
        "display",
        "owner",
        "beneficiary",
        "payee",
        "shopper",
    ]
)
_VALIDITY_TOKENS = frozenset({"type", "status", "valid", "validity"})
_LAT_WORDS = frozenset({"lat", "latitude"})
_LNG_WORDS = frozenset({"lng", "lon", "longitude"})
_HASH_TOKENS = frozenset({"hashed", "sha256", "hash"})
_SECRET_TOKENS = frozenset({"password", "passwd", "secret", "passphrase"})
_SECRET_VETO = frozenset({"at", "expires", "expiry", "name", "id", "type", "hint", "policy"})
# The last word of a key whose value is a URL (`StatusCallback`, `VoiceUrl`, `redirect_uri`).
_URL_WORDS = frozenset({"url", "urls", "uri", "link", "href", "callback", "webhook"})
# Tokens of a mobile advertising id (`device_idfa`, `hashedMaids`, `advertisingId`).
AD_ID_TOKENS = frozenset({"idfa", "gaid", "aaid", "oaid", "madid", "maid", "maids", "ifa", "aifa"})
# All the words of an advertising id's key (`googleAdvertisingId`, not `advertising_campaign_id`).
_AD_ID_WORDS = frozenset(
    {"advertising", "id", "identifier", "google", "android", "apple", "ios", "mobile", "device"}
)
# Tokens of an opt-in / opt-out (with a number: `OptedOutNumber` is an opt-out record).
_OPT_TOKENS = frozenset({"opt", "opted", "optin", "optout", "unsubscribed"})
_NUMBER_TOKENS = frozenset({"number", "numbers"})
# `text_opt_in`, `texting_consent`: SMS consent, with words that say consent (`marketing_text`
# is a message). TCPA consent (US) is consent to calls and texts, whatever else the key says.
_TEXT_TOKENS = frozenset({"text", "texts", "texting"})
_TEXT_CONSENT_TOKENS = frozenset({"consent", "consented", "opt", "opted", "optin", "optout"})
_CONSENT_TOKENS = frozenset(
    [
        "consent",
        "opt",
        "optin",
        "opted",
        "subscribe",
        "subscribed",
        "subscription",
        "unsubscribed",
        "marketing",
    ]
)
_ADDRESS_VETO = frozenset(
    {"ip", "email", "mac", "wallet", "web", "url", "callback", "ipv4", "ipv6"}
)


class Ctx:
    """Context flags of an object (from its parent keys and its sibling keys).

    Plain ints, not `enum.IntFlag`: flags are combined for every object of every payload and
    IntFlag arithmetic costs a microsecond a time.
    """

    NONE = 0
    PERSON = 1
    ADDRESS = 2
    LOCATION = 4
    MOBILE = 8
    CALL = 16
    SMS = 32
    LAT = 64  # a latitude key is among the siblings
    LNG = 128  # a longitude key is among the siblings
    NOT_PERSON = 256  # the object is a product, campaign, template...: `name` is not a person's
    EMPLOYER = 512  # the object is a company: its `name` is employment data
    ERROR = 1024  # an error/status object, a DNS record: its `message` is not a message body
    PHONE = 2048  # a phone-number key is among the siblings (weaker than MOBILE)
    HANDSET = 4096  # a carrier / MCC-MNC key is among the siblings (with PHONE: an HLR record)
    REFERENCE = 8192  # the object is an order, invoice, card...: its `number` is not a phone
    SENDER = 16384  # the object is a message's sender: its `name` may be a sender id (`QWIQI`)
    DIAL_CODE = 32768  # a country-calling-code key is among the siblings (a split number?)
    TOP = 65536  # a top-level field of a body, form or query: where APIs take credentials
    ROOT = 131072  # the body's own top-level object (its fields get TOP)
    INFRA = 262144  # a DNS record, a CDN origin, a backend: its values are a server's, not judged
    CHANNEL = 524288  # a key naming the channel is among the siblings: its value may say SMS
    DEVICE = 1048576  # a mobile advertising id is among the siblings: the record is a handset's
    PAIR = 2097152  # a label key and a `value` key are siblings: `{"name": "Email", "value": …}`


# Keys whose value names an object's channel (Pinpoint's `ChannelType`, Vonage's `channel`), and
# the values that make it a text message's: `{"ChannelType": "SMS", "OptOut": "ALL"}` is an SMS
# opt-out, though no key says SMS. Squashed, as keys are looked up.
CHANNEL_KEYS = frozenset({"channel", "channeltype", "messagechannel", "deliverychannel"})
_SMS_CHANNELS = frozenset({"sms", "mms", "text", "whatsapp", "rcs"})


def is_sms_channel(value: object) -> bool:
    """True for a channel key's value that names SMS (or MMS, WhatsApp, RCS), in any case."""
    return type(value) is str and len(value) <= 16 and value.strip().lower() in _SMS_CHANNELS


# Words of a mailbox's role in an e-mail key (`notification_email`, `alert_email`): the address is
# found, but its siblings are no person's record (a load balancer pool's `name` is the pool's).
_MAILBOX_ROLE_TOKENS = frozenset(
    {
        "notification",
        "notifications",
        "notify",
        "alert",
        "alerts",
        "alerting",
        "report",
        "reports",
        "reporting",
        "monitoring",
        "escalation",
        "abuse",
        "noc",
        "ops",
        "postmaster",
        "webmaster",
        "hostmaster",
    }
)

# Flags a key gives the object it names (`"address": {...}` makes an address context).
PARENT_FLAGS: dict[str, int] = {}
for _words, _flag in (
    (
        "user users customer customers contact contacts profile profiles person people "
        "subscriber subscribers recipient recipients member members patient client traits "
        "user_data identity identities owner account_holder cardholder "
        "billing_details shipping_details customer_information personal_info sender requester "
        "requesters shopper payer lead leads "
        # A message's personalisation: the values are its recipient's (Postmark's `TemplateModel`).
        "template_model dynamic_template_data template_data merge_vars",
        Ctx.PERSON,
    ),
    (
        "address shipping_address billing_address postal_address home_address mailing_address "
        "residential_address shipping billing",
        Ctx.ADDRESS,
    ),
    (
        "location geo geolocation position coordinates current_location last_location "
        "device_location position_info",
        Ctx.LOCATION,
    ),
    (
        "hlr lookup number_lookup msisdn subscriber_info sim network carrier roaming "
        "line_type_intelligence carrier_info hlr_lookup mnp portability",
        Ctx.MOBILE,
    ),
    ("call calls cdr cdrs call_detail_records call_records voice call_log", Ctx.CALL),
    ("sms mms text_message whatsapp sms_marketing sms_subscription", Ctx.SMS),
    (
        "product products item items campaign campaigns template templates event events list "
        "lists segment segments app application plan price merchant file files attachment "
        "attachments tag tags category categories channel audience audiences sku variant brand "
        "store shop page ad ads ad_set adset creative collection project workspace team metric "
        "metrics",
        Ctx.NOT_PERSON,
    ),
    ("company employer organization organisation workplace", Ctx.EMPLOYER),
    (
        "order orders invoice invoices receipt ticket tickets booking reservation card cards "
        "account payment_method document policy tracking shipment parcel package coupon voucher",
        Ctx.REFERENCE,
    ),
    ("error errors status meta metadata exception fault result", Ctx.ERROR),
    ("sender senders sender_info from reply_to from_address reply_to_address", Ctx.SENDER),
    (
        "origins origin_server origin_servers backends dns_record dns_records server servers "
        "application_server app_server",
        Ctx.INFRA | Ctx.NOT_PERSON,
    ),
):
    for _w in _words.split():
        PARENT_FLAGS[_w.replace("_", "")] = PARENT_FLAGS.get(_w.replace("_", ""), Ctx.NONE) | _flag

# Flags a key gives its siblings' object (`{"email": ..., "name": ...}` is about a person).
_SIBLING_FLAGS_BY_RULE: dict[str, int] = {
    Rule.EMAIL: Ctx.PERSON,
    Rule.NAME: Ctx.PERSON,
    Rule.ADDRESS: Ctx.PERSON | Ctx.ADDRESS,
    Rule.PHONE: Ctx.PHONE | Ctx.SMS,
    Rule.IMSI: Ctx.MOBILE,
    Rule.ICCID: Ctx.MOBILE,
    Rule.IMEI: Ctx.MOBILE,
    Rule.ROAMING: Ctx.MOBILE,
    Rule.CARRIER: Ctx.HANDSET,
    Rule.CARRIER_CTX: Ctx.HANDSET,
    Rule.VALIDITY: Ctx.MOBILE,
    Rule.DEVICE_STATUS: Ctx.MOBILE,
    Rule.CONSENT: Ctx.SMS,
    Rule.KEYWORD: Ctx.SMS,
    Rule.CDR: Ctx.CALL,
    Rule.GOV_ID: Ctx.PERSON,
    Rule.SSN: Ctx.PERSON,
    Rule.CELL: Ctx.LOCATION,
    Rule.AD_ID: Ctx.DEVICE,
}
_CALL_SIBLINGS = frozenset(
    w.replace("_", "")
    for w in [
        "call_sid",
        "call_id",
        "caller",
        "callee",
        "a_number",
        "b_number",
        "calling_number",
        "called_number",
        "call_uuid",
        "call_type",
        "direction_call",
    ]
)
# Keys of a country calling code: with a number beside them they may be one phone number
# (split.py joins them). Squashed, as keys are looked up.
DIAL_CODE_KEYS = frozenset(
    [
        "cc",
        "dialcode",
        "dialingcode",
        "diallingcode",
        "callingcode",
        "countrycallingcode",
        "countrydialcode",
        "phonecountrycode",
        "phonecode",
        "phoneprefix",
        "isd",
        "isdcode",
        "countrycode",
        "intcode",
    ]
)
# SMPP's message body fields (`submit_sm` over HTTP): their object is an SMS.
_SMS_SIBLINGS = frozenset(("shortmessage", "messagepayload"))
_PERSON_SIBLINGS = frozenset(
    w.replace("_", "")
    for w in [
        "birthday",
        "birthdate",
        "date_of_birth",
        "dob",
        "gender",
        "age",
        "first_name",
        "last_name",
    ]
)

# A key that is itself an identifier (`{"+6591234567": {...}}`, `{"mei@example.com": 1}`): it is
# scanned as a value, never cached, and shown as `*` in locations (locations never hold values).
IDENTIFIER_LIKE = re.compile(r"@|\d(?:[ ().\-]?\d){5}")
MASK = "*"


def is_identifier_like(key: str) -> bool:
    """True for a key that may be personal data itself (an e-mail, 6+ digits)."""
    return IDENTIFIER_LIKE.search(key) is not None


def any_identifier_like(keys: tuple[str, ...]) -> bool:
    """True when one of `keys` is identifier-like (one regex pass over all of them)."""
    return IDENTIFIER_LIKE.search("\x00".join(keys)) is not None


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NON_ALNUM = re.compile(r"[^0-9a-zA-Z]+")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What one key name means: its rule, its tokens, the context it gives."""

    raw: str
    tokens: tuple[str, ...]
    squashed: str
    rule: str | None
    is_negative: bool  # values under it are never read (ids, amounts, vendor credentials)
    parent_flags: int  # Ctx flags for the object this key names
    sibling_flags: int  # Ctx flags for the object this key is in


def normalise_key(key: str) -> tuple[str, ...]:
    """Split a key into lowercase tokens: `hashedPhoneNumber` → (`hashed`, `phone`, `number`)."""
    if not key.isascii():
        key = strip_invisible(key)
    key = _CAMEL.sub("_", key)
    return tuple(t for t in _NON_ALNUM.split(key.lower()) if t)


def _token_rule(tokens: tuple[str, ...], squashed: str) -> str | None:
    token_set = frozenset(tokens)
    if tokens and tokens[-1] in _URL_WORDS:
        return Rule.URL  # our webhook's address, but its query may name a customer
    if token_set & INFRASTRUCTURE_TOKENS:
        return Rule.NEGATIVE
    if token_set & _HASH_TOKENS:
        if token_set & {"phone", "msisdn", "mobile"}:
            return Rule.PHONE
        if token_set & {"email", "mail"}:
            return Rule.EMAIL
        if "name" in token_set:
            return Rule.NAME
        if token_set & AD_ID_TOKENS or "advertising" in token_set:
            return Rule.AD_ID
        return Rule.NEGATIVE
    if token_set & _SECRET_TOKENS and not token_set & _SECRET_VETO:
        return Rule.SECRET
    if token_set & _OPT_TOKENS and token_set & (_PHONE_TOKENS | _NUMBER_TOKENS):
        return Rule.CONSENT_PHONE
    if "sms" in token_set and token_set & _CONSENT_TOKENS:
        return Rule.CONSENT
    if "tcpa" in token_set or (token_set & _TEXT_TOKENS and token_set & _TEXT_CONSENT_TOKENS):
        return Rule.CONSENT
    if token_set & AD_ID_TOKENS or (
        "advertising" in token_set
        and token_set & {"id", "identifier"}
        and token_set <= _AD_ID_WORDS
    ):
        return Rule.AD_ID
    if token_set & _PHONE_TOKENS:
        if token_set & _VALIDITY_TOKENS:
            return Rule.VALIDITY
        if token_set & NEGATIVE_TOKENS:
            return Rule.NEGATIVE
        return Rule.PHONE
    if token_set & {"email", "mail"} and not token_set & NEGATIVE_TOKENS:
        return Rule.EMAIL
    if token_set & {"imei"}:
        return Rule.IMEI
    if token_set & {"imsi"}:
        return Rule.IMSI
    if token_set & {"iccid"}:
        return Rule.ICCID
    if "ip" in token_set or "ipv4" in token_set or "ipv6" in token_set:
        return Rule.IP
    if "ssn" in token_set:
        return Rule.SSN
    if "iban" in token_set:
        return Rule.BANK
    if token_set & NEGATIVE_TOKENS:
        return Rule.NEGATIVE
    if tokens and tokens[-1] == "name" and len(tokens) > 1 and tokens[0] in _PERSON_NAME_PREFIXES:
        return Rule.NAME
    if tokens and tokens[-1] == "address" and not token_set & _ADDRESS_VETO:
        return Rule.ADDRESS
    if token_set & {"latitude", "longitude"} or (tokens and tokens[-1] in _LAT_WORDS | _LNG_WORDS):
        return Rule.LAT_LNG  # `location_lat`, `geo_longitude`
    if "roaming" in token_set:
        return Rule.ROAMING
    if "carrier" in token_set:
        return Rule.CARRIER_CTX
    if "duration" in token_set:
        return Rule.CDR_CTX
    if "country" in token_set:
        return Rule.COUNTRY_CTX
    return None


@lru_cache(maxsize=8192)
def key_info(key: str) -> KeyInfo:
    """Classify a key name (cached: batches repeat the same few keys)."""
    tokens = normalise_key(key)
    squashed = "".join(tokens)
    rule = EXACT_RULES.get(squashed)
    if rule is None:
        rule = _token_rule(tokens, squashed)
    # Ignored keys: ids, amounts, digests.
    is_negative = rule == Rule.NEGATIVE or (rule is None and bool(set(tokens) & NEGATIVE_TOKENS))
    sibling = _SIBLING_FLAGS_BY_RULE.get(rule or "", Ctx.NONE)
    if rule == Rule.EMAIL and not _MAILBOX_ROLE_TOKENS.isdisjoint(tokens):
        sibling &= ~Ctx.PERSON
    if squashed in CHANNEL_KEYS:
        sibling |= Ctx.CHANNEL
    if squashed in _CALL_SIBLINGS:
        sibling |= Ctx.CALL
    if squashed in _PERSON_SIBLINGS:
        sibling |= Ctx.PERSON
    if squashed in _SMS_SIBLINGS:
        sibling |= Ctx.SMS
    if squashed in DIAL_CODE_KEYS:
        sibling |= Ctx.DIAL_CODE
    if squashed in ("lat", "latitude") or (rule == Rule.LAT_LNG and tokens[-1] in _LAT_WORDS):
        sibling |= Ctx.LAT
    if squashed in ("lng", "lon", "long", "longitude") or (
        rule == Rule.LAT_LNG and tokens[-1] in _LNG_WORDS
    ):
        sibling |= Ctx.LNG
    parent = PARENT_FLAGS.get(squashed, Ctx.NONE)
    if parent == Ctx.NONE and len(tokens) > 1:
        # `customer_address`, `addressInfo`, `sms_subscription`: the last, else the first, token.
        parent = PARENT_FLAGS.get(tokens[-1], Ctx.NONE) or PARENT_FLAGS.get(tokens[0], Ctx.NONE)
    return KeyInfo(key, tokens, squashed, rule, is_negative, parent, sibling)


def header_key_info(name: str) -> KeyInfo:
    """Classify a header name: `X-MSISDN` is looked up as `msisdn` (the `x-` is convention)."""
    info = key_info(name)
    if info.rule is None and info.tokens[:1] == ("x",) and len(info.tokens) > 1:
        return key_info("_".join(info.tokens[1:]))
    return info


@lru_cache(maxsize=4096)
def sibling_context(keys: tuple[str, ...]) -> int:
    """Context flags an object gets from its own keys (cached on the key tuple)."""
    flags = Ctx.NONE
    squashed = set()
    for key in keys:
        info = key_info(key)
        flags |= info.sibling_flags
        squashed.add(info.squashed)
    if "value" in squashed and not squashed.isdisjoint(PAIR_LABELS):
        flags |= Ctx.PAIR  # see walk.walk_pair
    if squashed >= _DNS_RECORD_KEYS and squashed & _DNS_RECORD_DATA:
        # `{"type": "A", "name": ..., "content": "118.200.45.17", "ttl": 300}`: its address is
        # a server's, and its `content` (a TXT record's text) no message (what ERROR says).
        flags |= Ctx.INFRA | Ctx.ERROR
    return flags


_DNS_RECORD_KEYS = frozenset({"type", "ttl"})
# Keys whose value names a field when a `value` key is beside them (HubSpot's `property`,
# Marketing Cloud's and Cognito's `name`, AWS tags' `key`). Squashed.
PAIR_LABELS = frozenset(
    {"name", "property", "key", "field", "attribute", "fieldname", "propertyname", "attributename"}
)
_DNS_RECORD_DATA = frozenset({"content", "data", "rdata", "value", "values", "address"})


# Sticky flags flow from an ancestor to every descendant; the others apply one level down.
STICKY = Ctx.MOBILE | Ctx.CALL | Ctx.SMS | Ctx.LOCATION | Ctx.PERSON
