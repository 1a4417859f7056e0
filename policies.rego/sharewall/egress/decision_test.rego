# Unit tests of data.sharewall.egress.decision: at least one firing and one non-firing case
# per reason code, each comparing the whole decision. Run by tests/policies/test_rego_unit.py
# (regorus) and by `opa test policies.rego/`.
package sharewall.egress_test

_tax := data.sharewall.taxonomy

_today := "2026-06-01"

_registry := {
	"version": 7,
	"revision": "test",
	"recipients": {
		"twilio": {
			"id": "twilio", "name": "Twilio Inc.", "kind": "ott_provider", "status": "approved",
			"regions": ["SG", "HK"], "hosts": ["api.twilio.com"],
			"tls_origination": false, "inspect_tls": true,
			"grants": [
				{"purpose": "service_delivery", "categories": ["contact.phone_number", "comms.content"], "legal_basis": "contract", "expires": null},
				# Granted on paper: the policy's absolute rules must still deny these.
				{"purpose": "marketing", "categories": ["contact.phone_number", "contact.email", "mobile.sms_consent"], "legal_basis": "consent", "expires": null},
				{"purpose": "billing", "categories": ["contact.phone_number"], "legal_basis": "contract", "expires": "2026-05-31"},
				{"purpose": "monitoring", "categories": ["contact.phone_number"], "legal_basis": "contract", "expires": "2026-06-01"},
			],
		},
		"helpdesk": {
			"id": "helpdesk", "name": "US support desk", "kind": "vendor", "status": "approved",
			"regions": ["US", "SG"], "hosts": ["helpdesk.example.com"],
			"tls_origination": true, "inspect_tls": true,
			"grants": [
				{"purpose": "customer_support", "categories": ["contact.email", "contact.name"], "legal_basis": "contract", "expires": null},
				{"purpose": "troubleshooting", "categories": ["contact.email"], "legal_basis": "legitimate_interests", "expires": null},
			],
		},
		"nowhere": {
			"id": "nowhere", "name": "Vendor without declared regions", "kind": "vendor", "status": "approved",
			"regions": [], "hosts": ["nowhere.example.com"],
			"tls_origination": false, "inspect_tls": false,
			"grants": [{"purpose": "troubleshooting", "categories": ["contact.email"], "legal_basis": "contract", "expires": null}],
		},
		"oldtel": {
			"id": "oldtel", "name": "Suspended carrier", "kind": "carrier", "status": "suspended",
			"regions": ["SG"], "hosts": ["api.oldtel.example"],
			"tls_origination": false, "inspect_tls": false,
			"grants": [{"purpose": "service_delivery", "categories": ["contact.phone_number"], "legal_basis": "contract", "expires": null}],
		},
		"adnet": {
			"id": "adnet", "name": "Ad network", "kind": "advertiser", "status": "approved",
			"regions": ["SG"], "hosts": ["ads.example.com"],
			"tls_origination": false, "inspect_tls": false,
			"grants": [{"purpose": "advertising", "categories": ["contact.email"], "legal_basis": "consent", "expires": null}],
		},
	},
}

# An allowed baseline call: a Twilio message send for service delivery, inspected, over TLS.
_base := {
	"request": {
		"id": "req-1", "method": "POST", "scheme": "https", "host": "api.twilio.com", "port": 443,
		"path": "/2010-04-01/Accounts/AC1/Messages.json", "inspected": true, "tls_upstream": true,
	},
	"source": {"workload": "sms-gateway", "namespace": "messaging"},
	"purpose": "service_delivery",
	"recipient_id": "twilio",
	"categories": ["comms.content", "contact.phone_number"],
	"findings": [{"category": "contact.phone_number", "location": "form:To", "detector": "phone"}],
	"inspection": {"complete": true, "problems": []},
	"date": _today,
}

_call(overrides) := object.union(_base, overrides)

_decide(call) := d if {
	d := data.sharewall.egress.decision with input as call with data.sharewall.registry as _registry
}

_allow := {"allow": true, "action": "allow", "reasons": []}

_deny(reasons) := {"allow": false, "action": "deny", "reasons": reasons}

_r(code) := {"code": code, "message": _tax.reason_codes[code]}

_rc(code, category) := {"code": code, "message": _tax.reason_codes[code], "category": category}

# ---- allow ----

test_allow_granted_categories_for_granted_purpose if {
	_decide(_base) == _allow
}

test_allow_call_without_personal_data if {
	_decide(_call({"categories": []})) == _allow
}

test_allow_grant_on_its_last_valid_day if {
	_decide(_call({"purpose": "monitoring", "categories": ["contact.phone_number"]})) == _allow
}

# ---- UNKNOWN_RECIPIENT ----

test_deny_unknown_recipient_unregistered_id if {
	_decide(_call({"recipient_id": "stranger"})) == _deny([_r("UNKNOWN_RECIPIENT")])
}

test_deny_unknown_recipient_null_id if {
	_decide(_call({"recipient_id": null})) == _deny([_r("UNKNOWN_RECIPIENT")])
}

test_allow_registered_recipient_is_not_unknown_recipient if {
	_decide(_call({"recipient_id": "twilio"})) == _allow
}

# ---- RECIPIENT_INACTIVE ----

test_deny_recipient_inactive_when_suspended if {
	d := _decide(_call({"recipient_id": "oldtel", "categories": ["contact.phone_number"]}))
	d == _deny([_r("RECIPIENT_INACTIVE")])
}

test_allow_approved_recipient_is_not_recipient_inactive if {
	reg := object.union(_registry, {"recipients": {"oldtel": {"status": "approved"}}})
	d := data.sharewall.egress.decision
		with input as _call({"recipient_id": "oldtel", "categories": ["contact.phone_number"]})
		with data.sharewall.registry as reg
	d == _allow
}

# ---- PURPOSE_UNDECLARED ----

test_deny_purpose_undeclared_null if {
	_decide(_call({"purpose": null, "categories": []})) == _deny([_r("PURPOSE_UNDECLARED")])
}

test_deny_purpose_undeclared_empty_string if {
	# Personal data, but twilio processes at home only: only the undeclared purpose fires.
	_decide(_call({"purpose": ""})) == _deny([_r("PURPOSE_UNDECLARED")])
}

test_allow_declared_purpose_is_not_purpose_undeclared if {
	_decide(_call({"purpose": "service_delivery", "categories": []})) == _allow
}

# ---- PURPOSE_UNKNOWN ----

test_deny_purpose_unknown if {
	_decide(_call({"purpose": "world_domination", "categories": []})) == _deny([_r("PURPOSE_UNKNOWN")])
}

test_allow_taxonomy_purpose_is_not_purpose_unknown if {
	_decide(_call({"recipient_id": "helpdesk", "purpose": "customer_support", "categories": ["contact.email"]})) == _allow
}

# ---- PURPOSE_NOT_APPROVED ----

test_deny_purpose_not_approved_without_grant if {
	_decide(_call({"purpose": "fraud_prevention", "categories": []})) == _deny([_r("PURPOSE_NOT_APPROVED")])
}

test_deny_purpose_not_approved_when_grant_expired if {
	d := _decide(_call({"purpose": "billing", "categories": ["contact.phone_number"]}))
	d == _deny([_r("PURPOSE_NOT_APPROVED")])
}

test_deny_purpose_not_approved_without_date if {
	# No input.date: a dated grant cannot be shown unexpired, so it grants nothing.
	call := object.remove(_call({"purpose": "monitoring", "categories": ["contact.phone_number"]}), ["date"])
	_decide(call) == _deny([_r("PURPOSE_NOT_APPROVED")])
}

test_allow_unexpired_grant_is_not_purpose_not_approved if {
	d := data.sharewall.egress.decision
		with input as _call({"purpose": "billing", "categories": ["contact.phone_number"], "date": "2026-05-31"})
		with data.sharewall.registry as _registry
	d == _allow
}

# ---- CATEGORY_NOT_APPROVED ----

test_deny_category_not_approved_one_reason_per_category if {
	d := _decide(_call({"categories": ["comms.content", "contact.email", "payment.account_number"]}))
	d == _deny([
		_rc("CATEGORY_NOT_APPROVED", "contact.email"),
		_rc("CATEGORY_NOT_APPROVED", "payment.account_number"),
	])
}

test_deny_category_granted_for_another_purpose_only if {
	# helpdesk has contact.name for customer_support, not for troubleshooting.
	d := _decide(_call({"recipient_id": "helpdesk", "purpose": "troubleshooting", "categories": ["contact.name"]}))
	d == _deny([_rc("CATEGORY_NOT_APPROVED", "contact.name"), _r("CROSS_BORDER_PURPOSE")])
}

test_allow_granted_category_is_not_category_not_approved if {
	_decide(_call({"categories": ["contact.phone_number"]})) == _allow
}

# ---- SMS_CONSENT_TO_THIRD_PARTY ----

test_deny_sms_consent_to_third_party_even_when_granted if {
	d := _decide(_call({"purpose": "marketing", "categories": ["mobile.sms_consent"]}))
	d == _deny([
		_rc("MOBILE_INFO_FOR_MARKETING", "mobile.sms_consent"),
		_rc("SMS_CONSENT_TO_THIRD_PARTY", "mobile.sms_consent"),
	])
}

test_deny_sms_consent_to_third_party_for_service_delivery if {
	d := _decide(_call({"categories": ["contact.phone_number", "mobile.sms_consent"]}))
	d == _deny([
		_rc("CATEGORY_NOT_APPROVED", "mobile.sms_consent"),
		_rc("SMS_CONSENT_TO_THIRD_PARTY", "mobile.sms_consent"),
	])
}

test_allow_without_sms_consent_is_not_sms_consent_to_third_party if {
	_decide(_call({"categories": ["contact.phone_number"]})) == _allow
}

# ---- MOBILE_INFO_FOR_MARKETING ----

test_deny_mobile_info_for_marketing_even_when_granted if {
	d := _decide(_call({"purpose": "marketing", "categories": ["contact.email", "contact.phone_number"]}))
	d == _deny([_rc("MOBILE_INFO_FOR_MARKETING", "contact.phone_number")])
}

test_deny_mobile_info_for_advertising_location if {
	d := _decide(_call({"recipient_id": "adnet", "purpose": "advertising", "categories": ["contact.email", "location.country"]}))
	d == _deny([
		_rc("CATEGORY_NOT_APPROVED", "location.country"),
		_rc("MOBILE_INFO_FOR_MARKETING", "location.country"),
	])
}

test_allow_marketing_without_mobile_info_is_not_mobile_info_for_marketing if {
	_decide(_call({"purpose": "marketing", "categories": ["contact.email"]})) == _allow
}

# ---- PERSONAL_DATA_IN_CLEARTEXT ----

test_deny_personal_data_in_cleartext if {
	call := _call({"request": {"scheme": "http", "tls_upstream": false}})
	_decide(call) == _deny([_r("PERSONAL_DATA_IN_CLEARTEXT")])
}

test_deny_personal_data_in_cleartext_when_tls_flag_missing if {
	call := object.union(object.remove(_base, ["request"]), {"request": object.remove(_base.request, ["tls_upstream"])})
	_decide(call) == _deny([_r("PERSONAL_DATA_IN_CLEARTEXT")])
}

test_allow_tls_origination_is_not_personal_data_in_cleartext if {
	call := _call({
		"recipient_id": "helpdesk", "purpose": "customer_support", "categories": ["contact.email"],
		"request": {"scheme": "http", "tls_upstream": true},
	})
	_decide(call) == _allow
}

test_allow_plain_http_without_data_is_not_personal_data_in_cleartext if {
	call := _call({"categories": [], "request": {"scheme": "http", "tls_upstream": false}})
	_decide(call) == _allow
}

# ---- CROSS_BORDER_PURPOSE ----

test_deny_cross_border_purpose_to_region_abroad if {
	d := _decide(_call({"recipient_id": "helpdesk", "purpose": "troubleshooting", "categories": ["contact.email"]}))
	d == _deny([_r("CROSS_BORDER_PURPOSE")])
}

test_deny_cross_border_purpose_without_declared_regions if {
	d := _decide(_call({"recipient_id": "nowhere", "purpose": "troubleshooting", "categories": ["contact.email"]}))
	d == _deny([_r("CROSS_BORDER_PURPOSE")])
}

test_allow_purpose_allowed_abroad_is_not_cross_border_purpose if {
	d := _decide(_call({"recipient_id": "helpdesk", "purpose": "customer_support", "categories": ["contact.email"]}))
	d == _allow
}

test_allow_home_regions_only_is_not_cross_border_purpose if {
	d := _decide(_call({"purpose": "monitoring", "categories": ["contact.phone_number"]}))
	d == _allow
}

test_allow_abroad_without_personal_data_is_not_cross_border_purpose if {
	d := _decide(_call({"recipient_id": "helpdesk", "purpose": "troubleshooting", "categories": []}))
	d == _allow
}

# ---- UNINSPECTED_HIGH_RISK ----

test_deny_uninspected_high_risk_tunnel_to_advertiser if {
	call := _call({
		"recipient_id": "adnet", "purpose": "advertising", "categories": [],
		"request": {"inspected": false},
	})
	_decide(call) == _deny([_r("UNINSPECTED_HIGH_RISK")])
}

test_allow_uninspected_tunnel_to_ott_provider_is_not_uninspected_high_risk if {
	call := _call({"categories": [], "request": {"inspected": false}})
	_decide(call) == _allow
}

test_allow_inspected_call_to_advertiser_is_not_uninspected_high_risk if {
	call := _call({"recipient_id": "adnet", "purpose": "advertising", "categories": ["contact.email"]})
	_decide(call) == _allow
}

# ---- INSPECTION_INCOMPLETE ----

test_deny_inspection_incomplete if {
	call := _call({"inspection": {"complete": false, "problems": ["body_too_large"]}})
	_decide(call) == _deny([_r("INSPECTION_INCOMPLETE")])
}

test_deny_inspection_incomplete_when_inspection_missing if {
	call := object.remove(_base, ["inspection"])
	_decide(call) == _deny([_r("INSPECTION_INCOMPLETE")])
}

test_allow_complete_inspection_with_benign_problem_is_not_inspection_incomplete if {
	call := _call({"inspection": {"complete": true, "problems": ["malformed_json"]}})
	_decide(call) == _allow
}

# ---- PURPOSE_NOT_ALLOWED_FOR_SOURCE ----

# The same registry with purposes bound to workloads (keyed by namespace, then name).
_bound_registry := object.union(_registry, {"workloads": {
	"messaging": {
		"sms-gateway": {
			"namespace": "messaging", "name": "sms-gateway", "status": "approved",
			"purposes": ["service_delivery", "troubleshooting"], "recipients": ["twilio"],
		},
		"sms-next": {
			"namespace": "messaging", "name": "sms-next", "status": "proposed",
			"purposes": ["service_delivery"], "recipients": null,
		},
	},
	"support": {"support-app": {
		"namespace": "support", "name": "support-app", "status": "approved",
		"purposes": ["customer_support", "troubleshooting"], "recipients": null,
	}},
	"marketing": {"campaigns": {
		"namespace": "marketing", "name": "campaigns", "status": "suspended",
		"purposes": ["advertising"], "recipients": null,
	}},
}})

_decide_bound(call) := d if {
	d := data.sharewall.egress.decision with input as call with data.sharewall.registry as _bound_registry
}

_from(workload, namespace, overrides) := object.union(
	_call(overrides),
	{"source": {"workload": workload, "namespace": namespace}},
)

test_allow_without_declared_workloads_any_source_is_not_purpose_not_allowed_for_source if {
	# Today's behaviour: a registry without workloads does not look at the source at all.
	_decide(_call({"source": {"workload": "anything", "namespace": "anywhere"}})) == _allow
	_decide(_call({"source": {"workload": null, "namespace": null}})) == _allow
	d := data.sharewall.egress.decision with input as _base
		with data.sharewall.registry as object.union(_registry, {"workloads": {}})
	d == _allow
}

test_allow_approved_workload_purpose_and_listed_recipient_is_not_purpose_not_allowed_for_source if {
	_decide_bound(_base) == _allow
}

test_allow_workload_without_recipient_list_is_not_purpose_not_allowed_for_source if {
	call := _from("support-app", "support", {
		"recipient_id": "helpdesk", "purpose": "customer_support", "categories": ["contact.email"],
	})
	_decide_bound(call) == _allow
}

test_allow_workload_without_recipients_key_is_not_purpose_not_allowed_for_source if {
	registry := object.union(_registry, {"workloads": {"support": {"support-app": {
		"namespace": "support", "name": "support-app", "status": "approved",
		"purposes": ["customer_support"],
	}}}})
	call := _from("support-app", "support", {
		"recipient_id": "helpdesk", "purpose": "customer_support", "categories": ["contact.email"],
	})
	d := data.sharewall.egress.decision with input as call with data.sharewall.registry as registry
	d == _allow
}

test_deny_purpose_not_allowed_for_source_unregistered_workload if {
	_decide_bound(_from("batch-job", "messaging", {})) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_same_name_other_namespace if {
	_decide_bound(_from("sms-gateway", "marketing", {})) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_without_source if {
	_decide_bound(_from(null, null, {})) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
	d := data.sharewall.egress.decision with input as object.remove(_base, ["source"])
		with data.sharewall.registry as _bound_registry
	d == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_purpose_not_its_own if {
	# Twilio holds a marketing grant; the SMS gateway may not declare marketing.
	call := _call({"purpose": "marketing", "categories": []})
	_decide_bound(call) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_recipient_outside_its_list if {
	call := _call({"recipient_id": "helpdesk", "purpose": "troubleshooting", "categories": []})
	_decide_bound(call) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_suspended_workload if {
	call := _from("campaigns", "marketing", {"recipient_id": "adnet", "purpose": "advertising", "categories": []})
	_decide_bound(call) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_proposed_workload if {
	_decide_bound(_from("sms-next", "messaging", {})) == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_when_only_proposed_workloads_exist if {
	# Declaring any workload turns binding on, whatever its status.
	registry := object.union(_registry, {"workloads": {"messaging": {"sms-next": {
		"namespace": "messaging", "name": "sms-next", "status": "proposed",
		"purposes": ["service_delivery"], "recipients": null,
	}}}})
	d := data.sharewall.egress.decision with input as _base with data.sharewall.registry as registry
	d == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE")])
}

test_deny_purpose_not_allowed_for_source_and_unknown_recipient_outside_its_list if {
	d := _decide_bound(_call({"recipient_id": "stranger"}))
	d == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE"), _r("UNKNOWN_RECIPIENT")])
}

test_allow_unknown_recipient_without_list_is_only_unknown_recipient_not_purpose_not_allowed_for_source if {
	call := _from("support-app", "support", {"recipient_id": "stranger", "purpose": "customer_support"})
	_decide_bound(call) == _deny([_r("UNKNOWN_RECIPIENT")])
}

test_deny_purpose_not_allowed_for_source_with_undeclared_purpose if {
	d := _decide_bound(_call({"purpose": null}))
	d == _deny([_r("PURPOSE_NOT_ALLOWED_FOR_SOURCE"), _r("PURPOSE_UNDECLARED")])
}

# ---- determinism and cache safety ----

test_allow_decision_ignores_request_id_host_path_and_locations if {
	call := _call({
		"request": {"id": "other", "host": "x.twilio.com", "path": "/other", "method": "GET"},
		"findings": [{"category": "comms.content", "location": "json:$.body", "detector": "key:body"}],
	})
	_decide(call) == _decide(_base)
}

test_deny_many_reasons_sorted_by_code_then_category if {
	call := _call({
		"recipient_id": "oldtel",
		"purpose": "marketing",
		"categories": ["mobile.sms_consent", "contact.phone_number"],
		"request": {"tls_upstream": false},
		"inspection": {"complete": false, "problems": ["timed_out"]},
	})
	_decide(call) == _deny([
		_r("INSPECTION_INCOMPLETE"),
		_rc("MOBILE_INFO_FOR_MARKETING", "contact.phone_number"),
		_rc("MOBILE_INFO_FOR_MARKETING", "mobile.sms_consent"),
		_r("PERSONAL_DATA_IN_CLEARTEXT"),
		_r("PURPOSE_NOT_APPROVED"),
		_r("RECIPIENT_INACTIVE"),
		_rc("SMS_CONSENT_TO_THIRD_PARTY", "mobile.sms_consent"),
	])
}

test_deny_empty_input_fails_closed if {
	d := data.sharewall.egress.decision with input as {} with data.sharewall.registry as _registry
	d == _deny([_r("INSPECTION_INCOMPLETE"), _r("PURPOSE_UNDECLARED"), _r("UNKNOWN_RECIPIENT")])
}

test_deny_without_registry_data_every_recipient_is_unknown if {
	d := data.sharewall.egress.decision with input as _base with data.sharewall.registry as {}
	d == _deny([_r("UNKNOWN_RECIPIENT")])
}
