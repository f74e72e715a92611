//! Model endpoints: push (multipart: `spec`, `artifact`, optional `pushed_by`), list, show,
//! deploy, rollback, archive.

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use meridian_gossip::Catalog;
use serde::{Deserialize, Serialize};

use super::{ApiError, SharedState};
use crate::registry::store::PushRequest;
use crate::registry::ModelRecord;

#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub versions: usize,
    pub latest: u32,
    /// The live version, if the model is deployed.
    pub live: Option<u32>,
    pub description: String,
}

pub async fn list(State(state): State<SharedState>) -> Result<Json<Vec<ModelSummary>>, ApiError> {
    let catalog = state.catalog.borrow().clone();
    let groups = state.registry_read(|r| r.models()).await?;
    let summaries = groups
        .into_iter()
        .filter_map(|group| {
            let last = group.last()?;
            Some(ModelSummary {
                name: last.name.clone(),
                versions: group.len(),
                latest: last.version,
                live: catalog.models.get(&last.name).map(|e| e.live.version),
                description: last.spec.description.clone(),
            })
        })
        .collect();
    Ok(Json(summaries))
}

pub async fn show(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ModelRecord>>, ApiError> {
    let lookup = name.clone();
    let versions = state.registry_read(move |r| r.versions(&lookup)).await?;
    if versions.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no model named {name:?}")));
    }
    Ok(Json(versions))
}

fn parse_version(raw: &str) -> Result<u32, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request(format!("version {raw:?} is not a positive integer")))
}

pub async fn show_version(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<ModelRecord>, ApiError> {
    let version = parse_version(&version)?;
    Ok(Json(state.registry_read(move |r| r.version(&name, version)).await?))
}

struct PushParts {
    spec: Option<String>,
    artifact: Option<Bytes>,
    pushed_by: String,
}

async fn read_parts(mut multipart: Multipart) -> Result<PushParts, ApiError> {
    let mut parts = PushParts { spec: None, artifact: None, pushed_by: "anonymous".to_string() };
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), format!("reading the upload failed: {}", e.body_text()))
    };
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "spec" => parts.spec = Some(field.text().await.map_err(bad)?),
            "artifact" => parts.artifact = Some(field.bytes().await.map_err(bad)?),
            "pushed_by" => parts.pushed_by = field.text().await.map_err(bad)?,
            other => {
                return Err(ApiError::bad_request(format!(
                "unexpected form field {other:?}; a push has `spec`, `artifact` and optionally `pushed_by`"
            )))
            }
        }
    }
    Ok(parts)
}

pub async fn push(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    multipart: Multipart,
) -> Result<(StatusCode, Json<ModelRecord>), ApiError> {
    let parts = read_parts(multipart).await?;
    let spec = parts.spec.ok_or_else(|| ApiError::bad_request("the push has no `spec` field"))?;
    let artifact = parts.artifact.ok_or_else(|| ApiError::bad_request("the push has no `artifact` field"))?;
    let created_at = rfc3339_now();
    let record = state
        .registry_op(move |r| {
            r.push(PushRequest {
                name: &name,
                spec: &spec,
                artifact: &artifact,
                pushed_by: &parts.pushed_by,
                created_at,
            })
        })
        .await?;
    tracing::info!(model = %record.name, version = record.version, digest = %record.digest, "pushed");
    Ok((StatusCode::CREATED, Json(record)))
}

/// Wall-clock time for `created_at` (RFC 3339, seconds); the registry is not a simulated core.
#[allow(clippy::disallowed_methods)]
pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Version to make live; the latest non-archived one when absent.
    pub version: Option<u32>,
}

pub async fn deploy(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Catalog>, ApiError> {
    let request: DeployRequest = if body.is_empty() {
        DeployRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid deploy request: {e}")))?
    };
    let catalog = state.registry_op(move |r| r.deploy(&name, request.version)).await?;
    Ok(Json(catalog))
}

pub async fn rollback(
    State(state): State<SharedState>,
    Path(name): Path<String>,
) -> Result<Json<Catalog>, ApiError> {
    Ok(Json(state.registry_op(move |r| r.rollback(&name)).await?))
}

/// `PUT /api/v1/models/{name}/placement`: `{"mode": "all" | "on_demand"}` or
/// `{"mode": "regions", "regions": [...]}`.
pub async fn place(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Catalog>, ApiError> {
    let placement = parse_placement(&body)?;
    Ok(Json(state.registry_op(move |r| r.place(&name, placement)).await?))
}

/// A placement body: `{"mode": "all" | "on_demand"}` or `{"mode": "regions", "regions": [..]}`,
/// region names 1-64 letters, digits, '-', '_' or '.'.
fn parse_placement(body: &[u8]) -> Result<meridian_gossip::Placement, ApiError> {
    let expected =
        "expected {\"mode\": \"all\" | \"on_demand\"} or {\"mode\": \"regions\", \"regions\": [...]}";
    let raw: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("placement: malformed JSON: {e} ({expected})")))?;
    if raw.get("regions").is_some() && raw.get("mode").and_then(|m| m.as_str()) != Some("regions") {
        return Err(ApiError::bad_request(format!(
            "placement: \"regions\" goes only with \"mode\": \"regions\" ({expected})"
        )));
    }
    let placement: meridian_gossip::Placement = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(format!("placement: {e} ({expected})")))?;
    if let meridian_gossip::Placement::Regions { regions } = &placement {
        if regions.is_empty() {
            return Err(ApiError::bad_request("placement: regions must list at least one region"));
        }
        if let Some(bad) = regions.iter().find(|r| !meridian_models::spec::is_safe_name(r, 64)) {
            return Err(ApiError::bad_request(format!(
                "placement: region {bad:?} must be 1-64 letters, digits, '-', '_' or '.'"
            )));
        }
    }
    Ok(placement)
}

pub async fn archive(
    State(state): State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Catalog>, ApiError> {
    let version = parse_version(&version)?;
    Ok(Json(state.registry_op(move |r| r.archive(&name, version)).await?))
}
