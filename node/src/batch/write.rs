//! Writing a job's output file: one record per scored row, in input order, with the row's id,
//! `prediction`, `confidence` and `model_version`, as CSV, NDJSON or Parquet. Blocking.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use super::format::Format;

/// One scored row of a job (what the checkpoint keeps and the output file holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// 0-based data row of the input.
    pub index: u64,
    /// The input's id cell; the output uses `index` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub prediction: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

impl Scored {
    pub fn id_text(&self) -> String {
        self.id.clone().unwrap_or_else(|| self.index.to_string())
    }
}

/// Rows per Parquet record batch (and row group granularity).
const PARQUET_BATCH: usize = 8192;

pub struct OutputWriter {
    inner: Inner,
    version: u32,
}

enum Inner {
    Csv(BufWriter<File>),
    Ndjson(BufWriter<File>, String),
    Parquet { writer: Box<ArrowWriter<File>>, schema: SchemaRef, rows: Vec<Scored> },
}

fn parquet_error(e: parquet::errors::ParquetError) -> std::io::Error {
    match e {
        parquet::errors::ParquetError::External(inner) => std::io::Error::other(inner.to_string()),
        other => std::io::Error::other(other.to_string()),
    }
}

impl OutputWriter {
    /// Create (truncate) `path`; `id_column` names the id column.
    pub fn create(path: &Path, format: Format, id_column: &str, version: u32) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let inner = match format {
            Format::Csv => {
                let mut w = BufWriter::with_capacity(1 << 20, file);
                let mut header = csv::Writer::from_writer(Vec::new());
                header.write_record([id_column, "prediction", "confidence", "model_version"])?;
                w.write_all(&header.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?)?;
                Inner::Csv(w)
            }
            Format::Ndjson => Inner::Ndjson(BufWriter::with_capacity(1 << 20, file), id_column.to_string()),
            Format::Parquet => {
                let schema = Arc::new(Schema::new(vec![
                    Field::new(id_column, DataType::Utf8, false),
                    Field::new("prediction", DataType::Float64, false),
                    Field::new("confidence", DataType::Float64, true),
                    Field::new("model_version", DataType::UInt32, false),
                ]));
                let writer =
                    Box::new(ArrowWriter::try_new(file, schema.clone(), None).map_err(parquet_error)?);
                Inner::Parquet { writer, schema, rows: Vec::with_capacity(PARQUET_BATCH) }
            }
        };
        Ok(Self { inner, version })
    }

    pub fn write(&mut self, row: &Scored) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Csv(w) => {
                let id = row.id_text();
                // Quote ids that need it; numbers never do.
                if id.contains([',', '"', '\n', '\r']) {
                    write!(w, "\"{}\"", id.replace('"', "\"\""))?;
                } else {
                    w.write_all(id.as_bytes())?;
                }
                match row.confidence {
                    Some(c) => writeln!(w, ",{},{c},{}", row.prediction, self.version),
                    None => writeln!(w, ",{},,{}", row.prediction, self.version),
                }
            }
            Inner::Ndjson(w, id_column) => {
                let line = serde_json::json!({
                    id_column.as_str(): row.id_text(),
                    "prediction": row.prediction,
                    "confidence": row.confidence,
                    "model_version": self.version,
                });
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")
            }
            Inner::Parquet { rows, .. } => {
                rows.push(row.clone());
                if rows.len() >= PARQUET_BATCH {
                    self.flush_parquet()?;
                }
                Ok(())
            }
        }
    }

    fn flush_parquet(&mut self) -> std::io::Result<()> {
        let Inner::Parquet { writer, schema, rows } = &mut self.inner else { return Ok(()) };
        if rows.is_empty() {
            return Ok(());
        }
        let ids: StringArray = rows.iter().map(|r| Some(r.id_text())).collect();
        let predictions: Float64Array = rows.iter().map(|r| Some(r.prediction)).collect();
        let confidences: Float64Array = rows.iter().map(|r| r.confidence).collect();
        let versions = UInt32Array::from(vec![self.version; rows.len()]);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids), Arc::new(predictions), Arc::new(confidences), Arc::new(versions)],
        )
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        writer.write(&batch).map_err(parquet_error)?;
        rows.clear();
        Ok(())
    }

    /// Write what is buffered and sync the file to disk.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.flush_parquet()?;
        let file = match self.inner {
            Inner::Csv(w) | Inner::Ndjson(w, _) => w.into_inner().map_err(|e| e.into_error())?,
            Inner::Parquet { writer, .. } => writer.into_inner().map_err(parquet_error)?,
        };
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::batch::format::{Layout, Parsed};
    use meridian_models::features::FeatureValue;

    fn rows() -> Vec<Scored> {
        vec![
            Scored { index: 0, id: Some("a,1".into()), prediction: 0.25, confidence: Some(0.75) },
            Scored { index: 1, id: None, prediction: 3.5, confidence: None },
        ]
    }

    fn write(format: Format, path: &Path) {
        let mut w = OutputWriter::create(path, format, "id", 7).unwrap();
        for r in rows() {
            w.write(&r).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn csv_and_ndjson_outputs_carry_id_prediction_confidence_and_version() {
        let dir = tempfile::tempdir().unwrap();
        write(Format::Csv, &dir.path().join("o.csv"));
        let text = std::fs::read_to_string(dir.path().join("o.csv")).unwrap();
        assert_eq!(text, "id,prediction,confidence,model_version\n\"a,1\",0.25,0.75,7\n1,3.5,,7\n");
        write(Format::Ndjson, &dir.path().join("o.ndjson"));
        let text = std::fs::read_to_string(dir.path().join("o.ndjson")).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            serde_json::json!({"id": "a,1", "prediction": 0.25, "confidence": 0.75, "model_version": 7})
        );
        assert_eq!(lines[1]["confidence"], serde_json::Value::Null);
    }

    #[test]
    fn parquet_output_reads_back_through_the_input_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.parquet");
        write(Format::Parquet, &path);
        let spec = meridian_models::ModelSpec::parse(
            "features = [\"prediction\", \"confidence\"]\n[output]\nkind = \"regressor\"\nvalue = \"v\"\n",
        )
        .unwrap();
        let layout = Layout::new(&spec, vec![], "id");
        let read: Vec<Parsed> =
            super::super::read::open(&path, Format::Parquet, &layout).unwrap().map(Result::unwrap).collect();
        let Parsed::Row(first) = &read[0] else { panic!("{read:?}") };
        assert_eq!(first.id.as_deref(), Some("a,1"));
        assert_eq!(first.values, vec![Some(FeatureValue::Number(0.25)), Some(FeatureValue::Number(0.75))]);
        let Parsed::Row(second) = &read[1] else { panic!("{read:?}") };
        assert_eq!((second.id.as_deref(), &second.values[1]), (Some("1"), &None));
    }

    #[test]
    fn a_full_disk_is_an_error_not_a_panic() {
        let path = Path::new("/dev/full");
        if !path.exists() {
            return;
        }
        let mut w = OutputWriter::create(path, Format::Csv, "id", 1).unwrap();
        let big = Scored { index: 0, id: Some("x".repeat(1 << 21)), prediction: 1.0, confidence: None };
        let result = w.write(&big).and_then(|()| w.finish());
        assert!(result.is_err());
    }
}
