//! Feature writes and reads: one entity (`PUT`/`GET /api/v1/features/{view}/{entity}`) and bulk
//! ingest (`POST /api/v1/features/{view}/ingest`, NDJSON or CSV). Every value is checked
//! against the view's types; a bad line is refused with its number and the rest still lands.

use std::collections::BTreeMap;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use meridian_models::features::{FeatureValue, FeatureView};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::{parse_json, ApiError};
use super::AppState;
use crate::features::row::{unix_ms, StoredRow};
use crate::features::FeatureStoreError;

/// Longest line (row) accepted in an ingest.
const MAX_LINE_BYTES: usize = 64 << 10;
/// Refused lines listed in an ingest answer (all are counted).
const MAX_LISTED: usize = 1_000;
/// Rows written to the store per call during an ingest.
const WRITE_CHUNK: usize = 10_000;

fn view_of(state: &AppState, name: &str) -> Result<FeatureView, ApiError> {
    state.table.load().catalog.views.get(name).cloned().ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown feature view {name:?} (views are defined with `meridian features apply`)"
        ))
    })
}

impl From<FeatureStoreError> for ApiError {
    fn from(e: FeatureStoreError) -> Self {
        match e {
            FeatureStoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
            FeatureStoreError::Local(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// Check one row of named values against `view`, leaving out the field named `skip` (the
/// entity key of an ingested line).
fn check_row(
    view: &FeatureView,
    values: &Map<String, Value>,
    skip: Option<&str>,
) -> Result<StoredRow, String> {
    let mut row = StoredRow { values: BTreeMap::new(), written_at_ms: unix_ms() };
    for (name, value) in values {
        if Some(name.as_str()) == skip || value.is_null() {
            continue;
        }
        row.values.insert(name.clone(), view.check(name, value)?);
    }
    if row.values.is_empty() {
        return Err("no feature values".to_string());
    }
    Ok(row)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    features: Map<String, Value>,
}

pub async fn put(
    State(state): State<AppState>,
    Path((view, entity)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let view = view_of(&state, &view)?;
    let request: WriteRequest = parse_json(&body?)?;
    let row = check_row(&view, &request.features, None).map_err(ApiError::bad_request)?;
    state.features.write(&view, vec![(entity, row)]).await?;
    Ok(Json(json!({ "written": 1, "store": state.features.kind() })))
}

pub async fn get(
    State(state): State<AppState>,
    Path((view, entity)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let view = view_of(&state, &view)?;
    let found = state.features.get(&view, &entity).await;
    let row = found.row.ok_or_else(|| {
        ApiError::not_found(format!("no row for {:?} {entity:?} in view {:?}", view.entity, view.name))
    })?;
    // Values are stored as numbers; they read back in the view's types.
    let features: Map<String, Value> =
        row.values.iter().map(|(name, value)| (name.clone(), typed(&view, name, value))).collect();
    Ok(Json(json!({
        "view": view.name,
        view.entity.clone(): entity,
        "features": features,
        "age_ms": row.age_ms(unix_ms()),
        "source": found.tier.label(),
        "degraded": found.degraded,
    })))
}

/// A stored value as JSON of its feature's type: `int` as an integer, `bool` as a boolean.
fn typed(view: &FeatureView, name: &str, value: &FeatureValue) -> Value {
    use meridian_models::features::FeatureType;
    match (view.features.get(name), value) {
        (Some(FeatureType::Int), FeatureValue::Number(x)) if x.fract() == 0.0 && x.abs() < 9.0e15 => {
            json!(*x as i64)
        }
        (Some(FeatureType::Bool), FeatureValue::Number(x)) => json!(*x != 0.0),
        _ => json!(value),
    }
}

#[derive(Debug, Serialize)]
pub struct Refused {
    pub line: usize,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct IngestSummary {
    pub view: String,
    pub written: usize,
    pub refused_count: usize,
    /// The first refused lines (1-based line numbers of the body).
    pub refused: Vec<Refused>,
    pub store: &'static str,
}

/// An ingest body's rows, in order: each an entity's row or a refused line.
type Parsed<'a> = Box<dyn Iterator<Item = Result<(String, StoredRow), Refused>> + Send + 'a>;

fn ndjson_rows<'a>(view: &'a FeatureView, text: &'a str) -> Parsed<'a> {
    Box::new(text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()).map(move |(i, line)| {
        let parsed = if line.len() > MAX_LINE_BYTES {
            Err(format!("line longer than {MAX_LINE_BYTES} bytes"))
        } else {
            serde_json::from_str::<Map<String, Value>>(line)
                .map_err(|e| format!("not a JSON object: {e}"))
                .and_then(|obj| entity_row(view, &obj))
        };
        parsed.map_err(|error| Refused { line: i + 1, error })
    }))
}

fn entity_row(view: &FeatureView, obj: &Map<String, Value>) -> Result<(String, StoredRow), String> {
    let entity = match obj.get(&view.entity) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(format!("missing the entity key {:?}", view.entity)),
    };
    Ok((entity, check_row(view, obj, Some(&view.entity))?))
}

fn csv_rows<'a>(view: &'a FeatureView, text: &'a str) -> Parsed<'a> {
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => {
            return Box::new(std::iter::once(Err(Refused {
                line: 1,
                error: format!("unreadable header: {e}"),
            })))
        }
    };
    Box::new(reader.into_records().map(move |record| match record {
        Ok(r) => {
            let line = r.position().map_or(0, |p| p.line() as usize);
            csv_row(view, &header, &r).map_err(|error| Refused { line, error })
        }
        Err(e) => Err(Refused {
            line: e.position().map_or(0, |p| p.line() as usize),
            error: format!("malformed CSV: {e}"),
        }),
    }))
}

fn csv_row(
    view: &FeatureView,
    header: &[String],
    record: &csv::StringRecord,
) -> Result<(String, StoredRow), String> {
    if record.len() != header.len() {
        return Err(format!("{} cells, the header has {}", record.len(), header.len()));
    }
    let mut obj = Map::new();
    for (name, cell) in header.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        let value = match view.features.get(name) {
            Some(meridian_models::features::FeatureType::String) => Value::String(cell.to_string()),
            _ if name == &view.entity => Value::String(cell.to_string()),
            _ => serde_json::from_str::<Value>(cell)
                .map_err(|_| format!("{name} = {cell:?} is not a number or bool"))?,
        };
        obj.insert(name.clone(), value);
    }
    entity_row(view, &obj)
}

pub async fn ingest(
    State(state): State<AppState>,
    Path(view): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestSummary>, ApiError> {
    let view = view_of(&state, &view)?;
    let body = body.map_err(|e| match ApiError::from(e) {
        e if e.status == axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(format!(
            "the body is larger than this node's max_ingest_bytes ({})",
            state.config.max_ingest_bytes
        )),
        e => e,
    })?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
    let is_csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/csv"));
    // Parsed and written a chunk at a time: memory follows the chunk, not the body.
    let mut rows = if is_csv { csv_rows(&view, text) } else { ndjson_rows(&view, text) };
    let (mut written, mut refused, mut refused_count) = (0, Vec::new(), 0);
    loop {
        let mut chunk = Vec::with_capacity(WRITE_CHUNK);
        for row in rows.by_ref() {
            match row {
                Ok(row) => {
                    chunk.push(row);
                    if chunk.len() == WRITE_CHUNK {
                        break;
                    }
                }
                Err(r) => {
                    refused_count += 1;
                    if refused.len() < MAX_LISTED {
                        refused.push(r);
                    }
                }
            }
        }
        if chunk.is_empty() {
            break;
        }
        written += state.features.write(&view, chunk).await?;
    }
    drop(rows);
    Ok(Json(IngestSummary { view: view.name, written, refused_count, refused, store: state.features.kind() }))
}
