# The egress decision: may this call carry these data categories to this recipient for this purpose?
#
# Input: DESIGN.md's policy input plus `date` (UTC day, "YYYY-MM-DD").
# Data: data.sharewall.taxonomy (taxonomy/data.json) and data.sharewall.registry (the snapshot).
# Output: {"allow", "action", "reasons"}; allow iff no reason fired.
#
# Every reason is derived only from recipient_id, purpose, categories, source,
# request.scheme/inspected/tls_upstream, inspection.complete, date and the snapshot,
# never from the request id, host, path, method or finding locations: the proxy caches
# decisions on exactly those facts. Denials are written on negated helpers so that a
# missing or mistyped input field can never read as "allowed".
package sharewall.egress

_taxonomy := data.sharewall.taxonomy

# Read only at input.recipient_id: the embedded engine holds just the recipients decisions
# have asked about (proxy/engines/embedded.py), which gives the same answers only while no
# rule looks at other recipients.
_recipients := data.sharewall.registry.recipients

# Workloads keyed by namespace then name; an empty (or absent, older snapshot) map means the
# registry declares none and source binding is off.
_workloads := object.get(data.sharewall.registry, "workloads", {})

# The recipient the proxy resolved; undefined when the host matched nobody.
_recipient := _recipients[input.recipient_id]

_categories := {c | some c in input.categories}

decision := {
	"allow": _allows(reasons),
	"action": _action(reasons),
	"reasons": reasons,
}

# Functions rather than a comparison inside the object literal, which not every engine parses.
_allows(rs) := true if rs == []

_allows(rs) := false if rs != []

_action(rs) := "allow" if rs == []

_action(rs) := "deny" if rs != []

# Sorted by (code, category) so that both engines return the same array.
reasons := [entry[2] |
	some entry in sort([[r.code, object.get(r, "category", ""), r] | some r in _reasons])
]

# A code missing from the taxonomy must still deny, so the message falls back to the code.
# Looked up inline rather than through a helper function: every call costs the engine.
_reason(code) := {"code": code, "message": object.get(_taxonomy.reason_codes, code, code)}

_category_reason(code, category) := {
	"code": code,
	"message": object.get(_taxonomy.reason_codes, code, code),
	"category": category,
}

# ---- helpers (take arguments where they can; each answers a yes/no question) ----

_is_registered if _recipient

_is_approved(recipient) if recipient.status == "approved"

_has_purpose if {
	is_string(input.purpose)
	input.purpose != ""
}

_is_known_purpose(purpose) if _taxonomy.purposes[purpose]

# `expires` is the grant's last valid day; ISO dates compare as strings.
_is_grant_active(grant) if grant.expires == null

_is_grant_active(grant) if {
	is_string(grant.expires)
	is_string(input.date)
	grant.expires >= input.date
}

# Existence checks rather than building the list of active grants: cheaper on the hot path.
_has_active_grant(recipient, purpose) if {
	some g in recipient.grants
	g.purpose == purpose
	_is_grant_active(g)
}

_is_granted(recipient, purpose, category) if {
	some g in recipient.grants
	g.purpose == purpose
	category in g.categories
	_is_grant_active(g)
}

_has_personal_data if count(_categories) > 0

_is_tls_upstream if input.request.tls_upstream == true

_is_inspected if input.request.inspected == true

# Without a categories array the inspector's result is unusable, so it counts as incomplete.
_is_inspection_complete if {
	input.inspection.complete == true
	is_array(input.categories)
}

# A recipient processes data "at home" only if it declares regions and all of them are home regions.
_is_processed_at_home(recipient) if {
	count(recipient.regions) > 0
	every region in recipient.regions {
		region in _taxonomy.residency.home_regions
	}
}

_is_allowed_abroad(purpose) if purpose in _taxonomy.residency.purposes_allowed_abroad

_is_marketing(purpose) if purpose in _taxonomy.purpose_groups.marketing_purposes

_is_mobile_information(category) if category in _taxonomy.category_groups.mobile_information

_is_high_risk(recipient) if recipient.kind in _taxonomy.high_risk_kinds

_is_source_bound if count(_workloads) > 0

# The registered workload of the calling source; undefined when the source is unknown or unset.
_source_workload := _workloads[input.source.namespace][input.source.workload]

_may_declare(workload, purpose) if purpose in workload.purposes

# A workload without a recipient list may call any registered recipient.
_may_call(workload, _) if object.get(workload, "recipients", null) == null

_may_call(workload, recipient_id) if recipient_id in workload.recipients

_is_source_allowed(workload, purpose, recipient_id) if {
	_is_approved(workload)
	_may_declare(workload, purpose)
	_may_call(workload, recipient_id)
}

# ---- one rule per reason code ----

# Operational: only registered recipients may receive anything; an unknown host is an
# unreviewed third party.
_reasons contains _reason("UNKNOWN_RECIPIENT") if not _is_registered

# Operational (four-eyes review): a recipient that is proposed, suspended or revoked has no
# standing approval, whatever its grants say.
_reasons contains _reason("RECIPIENT_INACTIVE") if {
	_is_registered
	not _is_approved(_recipient)
}

# Operational: every flow must state why it happens (§3 "We list below the specific purposes
# for which we collect, use and otherwise process your Personal Data").
_reasons contains _reason("PURPOSE_UNDECLARED") if not _has_purpose

# Operational: a purpose outside the taxonomy matches no purpose of §3.
_reasons contains _reason("PURPOSE_UNKNOWN") if {
	_has_purpose
	not _is_known_purpose(input.purpose)
}

# §4: "We may share your Personal Data ... Third-party service providers that help us to deliver
# the services" - only for a purpose the registry granted that recipient, and not after the
# grant's last valid day.
_reasons contains _reason("PURPOSE_NOT_APPROVED") if {
	_is_registered
	_is_known_purpose(input.purpose)
	not _has_active_grant(_recipient, input.purpose)
}

# §4: "we share the data we collect from you with communications providers ... as necessary in
# order to provide you with the services" - only the categories granted for that purpose.
# Reported per category; when no grant exists at all PURPOSE_NOT_APPROVED already says so.
_reasons contains _category_reason("CATEGORY_NOT_APPROVED", category) if {
	_is_registered
	_has_active_grant(_recipient, input.purpose)
	some category in _categories
	not _is_granted(_recipient, input.purpose, category)
}

# §5: "QWIQI will not share text messaging originator opt-in data and consent with any third
# parties." Every recipient is a third party, so no grant can allow it.
_reasons contains _category_reason("SMS_CONSENT_TO_THIRD_PARTY", "mobile.sms_consent") if {
	"mobile.sms_consent" in _categories
}

# §5: "No mobile information will be shared with third parties/affiliates for
# marketing/promotional purposes." Whatever the grants.
_reasons contains _category_reason("MOBILE_INFO_FOR_MARKETING", category) if {
	_is_marketing(input.purpose)
	some category in _categories
	_is_mobile_information(category)
}

# §5: "QWIQI has implemented administrative, physical, and technical safeguards to protect the
# Personal Data we transmit" - personal data never leaves the pod over plain HTTP.
_reasons contains _reason("PERSONAL_DATA_IN_CLEARTEXT") if {
	_has_personal_data
	not _is_tls_upstream
}

# §6: "Personal information held by QWIQI is stored on Cloud servers in Singapore, and Hong
# Kong. We and/or our service providers may process data in other countries for customer care,
# account management, and service provisioning." A recipient without declared regions is
# treated as processing abroad.
_reasons contains _reason("CROSS_BORDER_PURPOSE") if {
	_has_personal_data
	_is_registered
	not _is_processed_at_home(_recipient)
	not _is_allowed_abroad(input.purpose)
}

# §5 safeguards, operational: a spliced tunnel cannot be checked for §5's sentences, and
# affiliates and advertisers are where "for marketing/promotional purposes" sharing would go.
_reasons contains _reason("UNINSPECTED_HIGH_RISK") if {
	_is_registered
	not _is_inspected
	_is_high_risk(_recipient)
}

# Operational: a purpose is only as good as the caller declaring it. Once the registry binds
# purposes to workloads, a call counts only from an approved workload, for one of its purposes,
# to one of its recipients (if it lists them); otherwise any job could claim service_delivery.
_reasons contains _reason("PURPOSE_NOT_ALLOWED_FOR_SOURCE") if {
	_is_source_bound
	not _is_source_allowed(_source_workload, input.purpose, input.recipient_id)
}

# Operational: a payload the inspector could not read in full (too large, undecodable, too deep,
# timed out) may hide any category; fail closed.
_reasons contains _reason("INSPECTION_INCOMPLETE") if not _is_inspection_complete
