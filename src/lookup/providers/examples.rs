//! The example responses of the provider documents (the contract), copied verbatim
//! (whitespace aside). The clients' unit tests parse them, and the simulator returns
//! them for the example IPs and ASNs. Parsed with `preserve_order`, so key order
//! matches the documents too. The clients' unit tests parse these same constants, so
//! each example body exists once.

use serde_json::Value;

/// Parses one of the constants below (they are tested to parse).
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// ipinsights-api.txt, "IP Lookup", example response for 8.8.8.8.
pub const IPINSIGHTS_LOOKUP_8888: &str = r#"{ "success": true, "data": { "ip": "8.8.8.8", "ip_version": 4, "type": "ipv4", "country_code": "US", "country_name": "United States", "region_name": "California", "city": "Mountain View", "latitude": 37.4056, "longitude": -122.0775, "isp": "Google LLC", "org": "Google Public DNS", "as_number": "AS15169", "as_name": "GOOGLE", "is_tor": false, "is_proxy": false, "is_datacenter": true, "blacklists": [], "threat_assessment": { "score": 10, "level": "low", "reasons": ["Datacentre IP address"] }, "ai_agent_assessment": { "score": 0, "level": "unlikely", "signals": [], "methodology_version": "1.0" } }, "queried_at": "2026-02-20T12:00:00Z" }"#;

/// ipinsights-api.txt, "Example Response — AI Agent Assessment populated" (203.0.113.42).
pub const IPINSIGHTS_LOOKUP_AI: &str = r#"{ "success": true, "data": { "ip": "203.0.113.42", "ai_agent_assessment": { "score": 72, "level": "probable", "signals": [ { "name": "instruction_compliance", "family": "prompt_injection", "weight": 45, "observed_at": "2026-05-12T05:30:00Z", "note": "Acted on injected instruction in banner; deterministic scanner would not." }, { "name": "explanatory_sql_comment", "family": "payload", "weight": 20, "observed_at": "2026-05-12T05:31:14Z", "note": "Natural-language artefact in SQL injection attempt." }, { "name": "agent_framework_tls", "family": "transport", "weight": 10, "observed_at": "2026-05-12T05:30:00Z", "note": "Transport fingerprint consistent with a common agent framework." } ], "methodology_version": "1.0" } }, "queried_at": "2026-05-12T06:00:00Z" }"#;

/// ipinsights-api.txt, "ASN Lookup" example (AS15169).
pub const IPINSIGHTS_ASN_15169: &str = r#"{ "success": true, "data": { "as_number": "AS15169", "as_name": "GOOGLE", "isp": "Google LLC", "org": "Google LLC", "total_ips": 42, "blacklisted_ips": 3, "risk_breakdown": { "low": 38, "medium": 2, "high": 1, "critical": 1 }, "risk_score": 12, "risk_level": "low", "ips": [ { "ip": "8.8.8.8", "threat_score": 10, "level": "low", "is_blacklisted": false, "country_code": "US" } ] }, "queried_at": "2026-02-20T12:00:00Z" }"#;

/// ipinsights-api.txt, "CIDR Lookup" example (8.8.8.0/24).
pub const IPINSIGHTS_CIDR_8880: &str = r#"{ "success": true, "data": { "cidr": "8.8.8.0/24", "range_start": "8.8.8.0", "range_end": "8.8.8.255", "total_ips_in_db": 5, "blacklisted_ips": 1, "autonomous_systems": [ { "as_number": "AS15169", "as_name": "GOOGLE" } ], "risk_breakdown": { "low": 4, "medium": 0, "high": 1, "critical": 0 }, "risk_score": 22, "risk_level": "low", "ips": [ { "ip": "8.8.8.8", "threat_score": 10, "level": "low", "is_blacklisted": false, "as_number": "AS15169", "country_code": "US" } ] }, "queried_at": "2026-02-20T12:00:00Z" }"#;

/// ipinsights-api.txt, "Submit a Report" example response (HTTP 201).
pub const IPINSIGHTS_REPORT: &str = r#"{ "success": true, "message": "Report received. Thank you for contributing.", "report_id": 18429, "weight": 1.00, "corroborated": false, "reputation": 1.00, "categories": ["ssh_bruteforce","port_scan"], "reported_at": "2026-05-12T06:49:10Z" }"#;

/// openipapi-api.txt, `GET /v1/lookup/{ip}` example (185.220.101.45).
pub const OPENIPAPI_LOOKUP_185: &str = r#"{
  "ip": "185.220.101.45",
  "type": "IPv4",
  "geo": {
    "country_code": "DE",
    "country": "Germany",
    "region": "Hessen",
    "region_code": "HE",
    "city": "Frankfurt am Main",
    "postal_code": "60313",
    "latitude": 50.1109,
    "longitude": 8.6821,
    "timezone": "Europe/Berlin",
    "is_sanctioned": false,
    "sanction_lists": []
  },
  "network": {
    "asn": 205100,
    "as_name": "F3 Netze e.V.",
    "as_domain": "f3netze.de",
    "isp": "F3 Netze",
    "organization": "F3 Netze e.V.",
    "connection_type": "datacenter"
  },
  "threat": {
    "is_vpn": true,
    "is_proxy": false,
    "is_tor": true,
    "is_relay": false,
    "is_hosting": true,
    "threat_score": 85,
    "threat_categories": ["tor_exit_node", "known_abuser"],
    "bot_type": null
  },
  "abuse": {
    "contact_email": "abuse@f3netze.de"
  }
}"#;

/// openipapi-api.txt, `GET /v1/asn/{asn}` example (13335).
pub const OPENIPAPI_ASN_13335: &str = r#"{
  "asn": 13335,
  "as_name": "Cloudflare, Inc.",
  "as_domain": "cloudflare.com",
  "organization": "Cloudflare, Inc.",
  "country_code": "US",
  "ip_ranges_count": 1284,
  "total_ips": 2359296
}"#;

/// openipapi-api.txt, `GET /v1/validate/{ip}` example (185.220.101.45).
pub const OPENIPAPI_VALIDATE: &str = r#"{
  "ip": "185.220.101.45",
  "valid": true,
  "type": "IPv4",
  "private": false,
  "bogon": false
}"#;

/// openipapi-api.txt, `GET /v1/fraud/{ip}` example (185.220.101.45).
pub const OPENIPAPI_FRAUD_185: &str = r#"{
  "ip": "185.220.101.45",
  "fraud_score": 92,
  "risk_level": "critical",
  "signals": {
    "is_vpn": true,
    "is_proxy": false,
    "is_tor": true,
    "is_datacenter": true,
    "is_known_attacker": true,
    "high_risk_country": false
  },
  "recommendation": "block"
}"#;

/// iptrust-api.txt, "Example Response" (74.148.39.34, every Premium section).
pub const IPTRUST_LOOKUP_74: &str = r#"{ "ip": "74.148.39.34", "is_bogon": false, "asn": { "number": "AS8075", "name": "MICROSOFT-CORP-MSN-AS-BLOCK", "company": "Microsoft Corporation", "country": "US", "route": "74.144.0.0/12", "rir": "ARIN", "domain": "www.microsoft.com", "type": "hosting", "description": "Provides consumer and enterprise software...", "risk": 0.9, "risk_label": "very_high", "risk_types": ["request_frequency", "repeated_abuse"] }, "location": { "city": "Barcelona", "state": "Barcelona", "country": "Spain", "latitude": 41.389, "longitude": 2.159, "meta": { "country_iso2": "ES", "country_iso3": "ESP", "country_numeric_code": "724", "country_phone_code": "34", "country_capital": "Madrid", "country_currency": "EUR", "country_currency_name": "Euro", "country_native": "Espana", "country_region": "Europe", "country_subregion": "Southern Europe", "country_emoji": "🇪🇸", "country_emoji_u": "U+1F1EA U+1F1F8" } }, "company": { "name": "mawa-solutions GmbH", "type": "business", "domain": "www.mawa-solutions.com", "description": "Provides SAP-based time-tracking..." }, "known_bot": { "detected": true, "bot_type": "ai", "name": "chatgpt_user" }, "hosting": { "detected": true, "domain": "www.microsoft.com", "name": "Microsoft Limited" }, "abuse_contact": { "address": "One Microsoft Way, Redmond, WA 98052", "email": "abuse@microsoft.com", "name": "Microsoft Abuse Contact" }, "tor_exit_node": { "detected": true }, "privacy_relay": { "detected": true, "provider": "icloud_private_relay" }, "proxy": { "detected": true, "type": "residential", "last_detected": "2025-11-15" }, "vpn": { "detected": true, "provider": "nord_vpn", "last_detected": "2025-11-15" } }"#;

/// cloudflare-radar-asn-by-ip.txt, "Returns Examples" (AS714, answered for 17.0.0.0/8).
pub const CLOUDFLARE_ASN_714: &str = r#"{
  "result": {
    "asn": {
      "asn": 714,
      "country": "GB",
      "countryName": "United Kingdom",
      "estimatedUsers": {
        "locations": [
          {
            "locationAlpha2": "US",
            "locationName": "United States",
            "estimatedUsers": 16710
          }
        ],
        "estimatedUsers": 86099
      },
      "name": "Apple Inc.",
      "orgName": "orgName",
      "related": [
        {
          "asn": 0,
          "name": "name",
          "aka": "aka",
          "estimatedUsers": 65345
        }
      ],
      "source": "RIPE",
      "website": "https://www.apple.com/support/systemstatus/",
      "aka": "aka"
    }
  },
  "success": true
}"#;

/// ipgeolocation-asn-api.txt, `200` example of `GET /v3/asn` (AS24940, every `include`
/// module; the YAML block scalar of `whois_response` restored with its newlines).
pub const IPGEOLOCATION_ASN_24940: &str = r##"{
  "asn": {
    "as_number": "AS24940",
    "organization": "Hetzner Online GmbH",
    "country": "DE",
    "type": "HOSTING",
    "domain": "hetzner.com",
    "date_allocated": "2002-06-03",
    "asn_name": "HETZNER-AS",
    "allocation_status": "ASSIGNED",
    "num_of_ipv4_routes": "84",
    "num_of_ipv6_routes": "6",
    "rir": "RIPE",
    "peers": [
      {
        "as_number": "AS58057",
        "description": "Securebit A",
        "country": "CH"
      },
      {
        "as_number": "AS28792",
        "description": "Public Internet Ltd",
        "country": "GB"
      }
    ],
    "routes": [
      "78.46.0.0/15",
      "138.199.128.0/17"
    ],
    "upstreams": [
      {
        "as_number": "AS12552",
        "description": "GlobalConnect AB",
        "country": "SE"
      },
      {
        "as_number": "AS58057",
        "description": "Securebit AG",
        "country": "CH"
      }
    ],
    "downstreams": [
      {
        "as_number": "AS209148",
        "description": "Securepoint GmbH",
        "country": "DE"
      },
      {
        "as_number": "AS198167",
        "description": "Apptc.me s.r.o.",
        "country": "CZ"
      }
    ],
    "whois_response": "#\n# ARIN WHOIS data and services are subject to the Terms of Use\n#\nASNumber: 24940\nASName: HETZNER-AS\nOrgName: Hetzner Online GmbH\nCountry: DE\n...\n"
  }
}"##;

#[cfg(test)]
mod tests {
    #[test]
    fn every_example_parses() {
        for text in [
            super::IPINSIGHTS_LOOKUP_8888,
            super::IPINSIGHTS_LOOKUP_AI,
            super::IPINSIGHTS_ASN_15169,
            super::IPINSIGHTS_CIDR_8880,
            super::IPINSIGHTS_REPORT,
            super::OPENIPAPI_LOOKUP_185,
            super::OPENIPAPI_ASN_13335,
            super::OPENIPAPI_VALIDATE,
            super::OPENIPAPI_FRAUD_185,
            super::IPTRUST_LOOKUP_74,
            super::CLOUDFLARE_ASN_714,
            super::IPGEOLOCATION_ASN_24940,
        ] {
            assert!(super::parse(text).is_object());
        }
    }
}
