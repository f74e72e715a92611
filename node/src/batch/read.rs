//! Reading job input files row by row: CSV (header row), NDJSON (one flat object per line) and
//! Parquet. A row that cannot be read is a [`Parsed::Bad`] with its line and the reason, and
//! reading goes on; only I/O failures end it. Blocking: runs on the job's reader thread.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type,
    UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use meridian_models::features::FeatureValue;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::Value;

use super::format::{text_cell, Column, Format, Layout, Parsed, ParsedRow};

/// Longest NDJSON line read; longer lines are refused (and skipped).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Read the next line into `buf` (cleared first): `None` at the end, `Some(true)` when the
/// line was longer than [`MAX_LINE_BYTES`] (the rest of it is skipped without being kept).
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let limit = (MAX_LINE_BYTES + 1) as u64;
    if std::io::Read::take(&mut *reader, limit).read_until(b'\n', buf)? == 0 {
        return Ok(None);
    }
    let too_long = buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n');
    if too_long {
        reader.skip_until(b'\n')?;
    }
    Ok(Some(too_long))
}

/// Rows of an input file, in order. `Err` only for I/O failures (the job fails).
pub type Rows = Box<dyn Iterator<Item = Result<Parsed, String>> + Send>;

/// Open `path` as `format` and read it against `layout`.
pub fn open(path: &Path, format: Format, layout: &Layout) -> Result<Rows, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(BufReader::new(file));
            let header = reader.byte_headers().map_err(|e| format!("cannot read the CSV header: {e}"))?;
            let columns = header.iter().map(|h| layout.column(String::from_utf8_lossy(h).trim())).collect();
            Ok(Box::new(CsvRows { reader, columns, layout: layout.clone(), index: 0 }))
        }
        Format::Ndjson => Ok(Box::new(NdjsonRows {
            reader: BufReader::new(file),
            layout: layout.clone(),
            buf: Vec::new(),
            line: 0,
            index: 0,
        })),
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| format!("{} is not a readable Parquet file: {e}", path.display()))?;
            let columns = builder.schema().fields().iter().map(|f| layout.column(f.name())).collect();
            let batches = builder.with_batch_size(4096).build().map_err(|e| e.to_string())?;
            Ok(Box::new(ParquetRows {
                batches,
                columns,
                layout: layout.clone(),
                batch: None,
                pos: 0,
                index: 0,
            }))
        }
    }
}

/// Data rows in the file (what [`open`] yields, good and bad); checks the file is readable.
pub fn count_rows(path: &Path, format: Format) -> Result<u64, String> {
    let file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(BufReader::new(file));
            reader.byte_headers().map_err(|e| format!("cannot read the CSV header: {e}"))?;
            let mut record = csv::ByteRecord::new();
            let mut n = 0;
            loop {
                match reader.read_byte_record(&mut record) {
                    Ok(true) => n += 1,
                    Ok(false) => return Ok(n),
                    Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Err(e.to_string()),
                    Err(_) => n += 1,
                }
            }
        }
        Format::Ndjson => {
            let mut reader = BufReader::new(file);
            let mut buf = Vec::new();
            let mut n = 0;
            while let Some(too_long) =
                next_line(&mut reader, &mut buf).map_err(|e| format!("cannot read: {e}"))?
            {
                if too_long || !buf.trim_ascii().is_empty() {
                    n += 1;
                }
            }
            Ok(n)
        }
        Format::Parquet => {
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| format!("{} is not a readable Parquet file: {e}", path.display()))?;
            Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
        }
    }
}

/// A cell that names something (id, entity key): text or a number's text.
fn key_text(v: &FeatureValue) -> String {
    match v {
        FeatureValue::Text(s) => s.clone(),
        FeatureValue::Number(x) => x.to_string(),
    }
}

/// Put one cell into `row` by column.
fn place(row: &mut ParsedRow, column: Column, value: Option<FeatureValue>) {
    match column {
        Column::Feature(i) => row.values[i] = value,
        Column::Id => row.id = value.as_ref().map(key_text),
        Column::Entity(i) => row.entity[i] = value.as_ref().map(key_text),
        Column::Ignored => {}
    }
}

struct CsvRows {
    reader: csv::Reader<BufReader<File>>,
    columns: Vec<Column>,
    layout: Layout,
    index: u64,
}

impl Iterator for CsvRows {
    type Item = Result<Parsed, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut record = csv::ByteRecord::new();
        let read = self.reader.read_byte_record(&mut record);
        let index = self.index;
        let line = record.position().map_or(0, csv::Position::line);
        match read {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => return Some(Err(e.to_string())),
            Err(e) => {
                self.index += 1;
                let line = e.position().map_or(line, csv::Position::line);
                return Some(Ok(Parsed::Bad { index, line, reason: e.to_string() }));
            }
        }
        self.index += 1;
        if record.len() != self.columns.len() {
            let reason = format!("{} cells, the header has {}", record.len(), self.columns.len());
            return Some(Ok(Parsed::Bad { index, line, reason }));
        }
        let mut row = self.layout.empty_row(index, line);
        for (cell, &column) in record.iter().zip(&self.columns) {
            if column == Column::Ignored {
                continue;
            }
            let Ok(text) = std::str::from_utf8(cell) else {
                return Some(Ok(Parsed::Bad { index, line, reason: "a cell is not UTF-8".to_string() }));
            };
            let value = match column {
                Column::Feature(_) => match text_cell(text) {
                    Ok(v) => v,
                    Err(reason) => return Some(Ok(Parsed::Bad { index, line, reason })),
                },
                _ => Some(FeatureValue::Text(text.trim().to_string())).filter(|_| !text.trim().is_empty()),
            };
            place(&mut row, column, value);
        }
        Some(Ok(Parsed::Row(row)))
    }
}

struct NdjsonRows {
    reader: BufReader<File>,
    layout: Layout,
    buf: Vec<u8>,
    line: u64,
    index: u64,
}

impl NdjsonRows {
    fn parse(&self, index: u64, line: u64) -> Parsed {
        let bad = |reason: String| Parsed::Bad { index, line, reason };
        let object: serde_json::Map<String, Value> = match serde_json::from_slice(&self.buf) {
            Ok(o) => o,
            Err(e) => return bad(format!("not a JSON object: {e}")),
        };
        let mut row = self.layout.empty_row(index, line);
        for (key, v) in &object {
            let column = self.layout.column(key);
            let value = match (column, v) {
                (Column::Ignored, _) | (_, Value::Null) => None,
                (_, v) => match FeatureValue::from_json(v) {
                    Some(value) => Some(value),
                    None => return bad(format!("{key:?} must be a finite number or a category, got {v}")),
                },
            };
            place(&mut row, column, value);
        }
        Parsed::Row(row)
    }
}

impl Iterator for NdjsonRows {
    type Item = Result<Parsed, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let too_long = match next_line(&mut self.reader, &mut self.buf) {
                Ok(None) => return None,
                Ok(Some(too_long)) => too_long,
                Err(e) => return Some(Err(format!("cannot read: {e}"))),
            };
            self.line += 1;
            let (index, line) = (self.index, self.line);
            if too_long {
                self.index += 1;
                let reason = format!("the line is longer than {MAX_LINE_BYTES} bytes");
                return Some(Ok(Parsed::Bad { index, line, reason }));
            }
            if self.buf.trim_ascii().is_empty() {
                continue;
            }
            self.index += 1;
            return Some(Ok(self.parse(index, line)));
        }
    }
}

struct ParquetRows {
    batches: ParquetRecordBatchReader,
    columns: Vec<Column>,
    layout: Layout,
    batch: Option<RecordBatch>,
    pos: usize,
    index: u64,
}

/// One Parquet cell as a feature value; `Err` for unsupported types and non-finite numbers.
fn arrow_cell(array: &ArrayRef, i: usize) -> Result<Option<FeatureValue>, String> {
    if array.is_null(i) {
        return Ok(None);
    }
    let x = match array.data_type() {
        DataType::Float64 => array.as_primitive::<Float64Type>().value(i),
        DataType::Float32 => f64::from(array.as_primitive::<Float32Type>().value(i)),
        DataType::Int8 => f64::from(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => f64::from(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => f64::from(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i) as f64,
        DataType::UInt8 => f64::from(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => f64::from(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => f64::from(array.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i) as f64,
        DataType::Boolean => f64::from(u8::from(array.as_boolean().value(i))),
        DataType::Utf8 => return Ok(Some(FeatureValue::Text(array.as_string::<i32>().value(i).to_string()))),
        DataType::LargeUtf8 => {
            return Ok(Some(FeatureValue::Text(array.as_string::<i64>().value(i).to_string())))
        }
        DataType::Utf8View => {
            return Ok(Some(FeatureValue::Text(array.as_string_view().value(i).to_string())))
        }
        other => return Err(format!("columns of type {other} are not supported")),
    };
    if x.is_finite() {
        Ok(Some(FeatureValue::Number(x)))
    } else {
        Err(format!("{x} is not a finite number"))
    }
}

impl Iterator for ParquetRows {
    type Item = Result<Parsed, String>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.batch.as_ref().is_none_or(|b| self.pos >= b.num_rows()) {
            match self.batches.next()? {
                Ok(batch) => {
                    self.batch = Some(batch);
                    self.pos = 0;
                }
                Err(e) => return Some(Err(format!("cannot read the Parquet file: {e}"))),
            }
        }
        let batch = self.batch.as_ref()?;
        let (index, i) = (self.index, self.pos);
        self.index += 1;
        self.pos += 1;
        let line = index + 1;
        let mut row = self.layout.empty_row(index, line);
        for (array, &column) in batch.columns().iter().zip(&self.columns) {
            if column == Column::Ignored {
                continue;
            }
            match arrow_cell(array, i) {
                Ok(value) => place(&mut row, column, value),
                Err(reason) => return Some(Ok(Parsed::Bad { index, line, reason })),
            }
        }
        Some(Ok(Parsed::Row(row)))
    }
}
