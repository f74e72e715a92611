//! File formats of batch jobs and how an input's columns map to a model's features. Pure.

use std::collections::HashMap;
use std::path::Path;

use meridian_models::features::FeatureValue;
use meridian_models::ModelSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
    Parquet,
}

impl Format {
    /// `csv`, `ndjson` (or `jsonl`, `json`), `parquet` (or `pq`), any case.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            "parquet" | "pq" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// From a file name's extension.
    pub fn of_path(path: &Path) -> Option<Self> {
        path.extension().and_then(|e| e.to_str()).and_then(Self::parse)
    }

    /// From a `Content-Type` (parameters ignored).
    pub fn of_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" => Some(Format::Csv),
            "application/x-ndjson" | "application/jsonl" | "application/ndjson" => Some(Format::Ndjson),
            "application/vnd.apache.parquet" | "application/x-parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Ndjson => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// What one input column is to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The row id copied to the output.
    Id,
    /// The join key of one of the model's feature views (index into [`Layout::entity_keys`]).
    Entity(usize),
    /// A model feature (index into the spec's features).
    Feature(usize),
    /// Anything else (labels, notes): read past.
    Ignored,
}

/// How a job reads rows for one model: feature names, entity keys and the id column.
#[derive(Debug, Clone)]
pub struct Layout {
    pub id_column: String,
    features: HashMap<String, usize>,
    pub feature_count: usize,
    /// Join keys of the views the model reads (e.g. `patient_id`), in a fixed order.
    pub entity_keys: Vec<String>,
}

impl Layout {
    /// `entity_keys`: the join key of each view the model reads.
    pub fn new(spec: &ModelSpec, entity_keys: Vec<String>, id_column: &str) -> Self {
        let features = spec.features.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        Self { id_column: id_column.to_string(), features, feature_count: spec.features.len(), entity_keys }
    }

    pub fn column(&self, name: &str) -> Column {
        if name == self.id_column {
            return Column::Id;
        }
        if let Some(&i) = self.features.get(name) {
            return Column::Feature(i);
        }
        match self.entity_keys.iter().position(|k| k == name) {
            Some(i) => Column::Entity(i),
            None => Column::Ignored,
        }
    }

    pub fn empty_row(&self, index: u64, line: u64) -> ParsedRow {
        ParsedRow {
            index,
            line,
            id: None,
            values: vec![None; self.feature_count],
            entity: vec![None; self.entity_keys.len()],
        }
    }
}

/// One input row, read but not yet assembled.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRow {
    /// 0-based data row (the header is not a row).
    pub index: u64,
    /// Where it is in the file, for reports: the line for CSV and NDJSON (1-based, the CSV
    /// header is line 1), the row number (1-based) for Parquet.
    pub line: u64,
    pub id: Option<String>,
    /// By feature index; `None`: not given (the store or the default may fill it).
    pub values: Vec<Option<FeatureValue>>,
    /// By entity key index.
    pub entity: Vec<Option<String>>,
}

/// A row, or why it cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Row(ParsedRow),
    Bad { index: u64, line: u64, reason: String },
}

impl Parsed {
    pub fn index(&self) -> u64 {
        match self {
            Parsed::Row(r) => r.index,
            Parsed::Bad { index, .. } => *index,
        }
    }
}

/// A text cell: empty is missing, a finite number is a number, other text is a category (a
/// numeric feature then refuses it by name). Non-finite numbers are refused here.
pub fn text_cell(cell: &str) -> Result<Option<FeatureValue>, String> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(None);
    }
    match cell.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(FeatureValue::Number(x))),
        Ok(_) => Err(format!("{cell:?} is not a finite number")),
        Err(_) => Ok(Some(FeatureValue::Text(cell.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_names_extensions_and_content_types() {
        assert_eq!(Format::parse("CSV"), Some(Format::Csv));
        assert_eq!(Format::parse("jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::parse("xlsx"), None);
        assert_eq!(Format::of_path(Path::new("/d/rows.parquet")), Some(Format::Parquet));
        assert_eq!(Format::of_path(Path::new("/d/rows")), None);
        assert_eq!(Format::of_content_type("text/csv; charset=utf-8"), Some(Format::Csv));
        assert_eq!(Format::of_content_type("application/octet-stream"), None);
    }

    #[test]
    fn cells_are_numbers_categories_or_missing() {
        assert_eq!(text_cell(" 1.5 "), Ok(Some(FeatureValue::Number(1.5))));
        assert_eq!(text_cell(""), Ok(None));
        assert_eq!(text_cell("fr"), Ok(Some(FeatureValue::Text("fr".into()))));
        assert!(text_cell("NaN").is_err() && text_cell("inf").is_err());
    }

    #[test]
    fn columns_map_to_id_features_entities_or_nothing() {
        let spec = ModelSpec::parse(
            "features = [\"a\", { name = \"b\", view = \"users\" }]\n[output]\nkind = \"regressor\"\nvalue = \"v\"\n",
        )
        .unwrap();
        let layout = Layout::new(&spec, vec!["user_id".into()], "id");
        assert_eq!(layout.column("id"), Column::Id);
        assert_eq!(layout.column("b"), Column::Feature(1));
        assert_eq!(layout.column("user_id"), Column::Entity(0));
        assert_eq!(layout.column("label"), Column::Ignored);
    }
}
