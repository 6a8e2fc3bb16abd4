//! OpenIPApi's `GET /v1/database/download/{source}` and the bytes behind it: a real MaxMind DB
//! built with [`crate::mmdb::writer`] from the simulator's own dataset, one record per
//! known network (CSV rows and the built-in table), so a client can open the download
//! with any MMDB reader and get the answers the HTTP endpoints give. Deterministic:
//! same dataset, same bytes, same `ETag`.
//!
//! Record shapes: `asn` is GeoLite2-ASN (`autonomous_system_number`,
//! `autonomous_system_organization`); `country` adds `country.iso_code`; the `city-*`
//! sources are GeoLite2-City-like (`city.names.en`, `country`, `location`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::config::OpenIpApiPlan;
use super::data::{hash_bytes, Dataset};
use super::openipapi::{admit, error, not_found};
use super::state::SimState;
use super::tables::COUNTRIES;
use super::wire;
use crate::mmdb::writer::{MmdbValue, MmdbWriteError, MmdbWriter};

/// The database file of one source.
pub fn mmdb_bytes(data: &Dataset, source: &str) -> Result<Vec<u8>, MmdbWriteError> {
    let db_type = match source {
        "asn" => "GeoLite2-ASN",
        "country" => "GeoLite2-Country",
        _ => "GeoLite2-City",
    };
    let mut writer = MmdbWriter::new(db_type);
    writer.set_description(
        "en",
        &format!("ipenrich simulator: OpenIPApi {source} database"),
    );
    let mut seen = HashSet::new();
    for (net, asn) in data.prefixes() {
        if !seen.insert(*net) {
            continue;
        }
        let asn_fields = || {
            vec![
                ("autonomous_system_number", MmdbValue::U32(asn.number)),
                (
                    "autonomous_system_organization",
                    MmdbValue::string(&asn.org),
                ),
            ]
        };
        let country = MmdbValue::map([("iso_code", MmdbValue::string(&asn.country))]);
        let value = match source {
            "asn" => MmdbValue::map(asn_fields()),
            "country" => {
                let mut fields = asn_fields();
                fields.push(("country", country));
                MmdbValue::map(fields)
            }
            _ => {
                let c = COUNTRIES
                    .iter()
                    .find(|c| c.code == asn.country)
                    .unwrap_or(&COUNTRIES[0]);
                let city = &c.cities[0];
                MmdbValue::map([
                    (
                        "city",
                        MmdbValue::map([(
                            "names",
                            MmdbValue::map([("en", MmdbValue::string(city.name))]),
                        )]),
                    ),
                    ("country", country),
                    (
                        "location",
                        MmdbValue::map([
                            ("latitude", MmdbValue::Double(city.lat)),
                            ("longitude", MmdbValue::Double(city.lon)),
                            ("time_zone", MmdbValue::string(city.tz)),
                        ]),
                    ),
                ])
            }
        };
        writer.insert(*net, value)?;
    }
    writer.to_bytes()
}

/// The plan each database source needs (document table "Available sources").
fn source_plan(source: &str) -> Option<OpenIpApiPlan> {
    Some(match source {
        "country" => OpenIpApiPlan::Pro,
        "asn" | "city-geolite2" => OpenIpApiPlan::Business,
        "city-dbip" => OpenIpApiPlan::Enterprise,
        _ => return None,
    })
}

/// `GET /v1/database/download/{source}`: plan check, `If-None-Match`, 10 a day.
pub async fn download(
    State(s): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(source): Path<String>,
) -> Response {
    let (_, plan) = match admit(&s, &headers, "database_download") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(needed) = source_plan(&source) else {
        return not_found();
    };
    if plan < needed {
        return error(
            StatusCode::FORBIDDEN,
            "plan_upgrade_required",
            "The requested feature requires a higher plan tier.",
        );
    }
    let bytes = match mmdb_bytes(&s.data(), &source) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, provider = "openipapi", "simulated mmdb build failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "An unexpected server error occurred.",
            );
        }
    };
    let etag = format!("\"{:016x}\"", hash_bytes(0, &bytes));
    let matches = wire::header(&headers, "if-none-match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    if let Err(retry) = s.take_download(&source) {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "MMDB downloads are capped at 10/day per source.",
        );
        wire::set_num(&mut r, "retry-after", retry);
        return r;
    }
    let filename = format!("attachment; filename=\"{source}.mmdb\"");
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::ETAG, etag),
            (header::CONTENT_DISPOSITION, filename),
        ],
        Bytes::from(bytes),
    )
        .into_response()
}
