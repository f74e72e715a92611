//! The binary tensor data extension of the Open Inference Protocol: a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw little-endian tensor bytes, in the
//! order of the inputs (or outputs) that carry `"binary_data_size"`.

use axum::http::HeaderMap;
use bytes::Bytes;
use meridian_models::TensorData;

use super::error::ApiError;

pub const HEADER: &str = "inference-header-content-length";

/// Split a request body into its JSON part and its binary part.
pub fn split(headers: &HeaderMap, body: Bytes) -> Result<(Bytes, Bytes), ApiError> {
    let Some(value) = headers.get(HEADER) else {
        return Ok((body, Bytes::new()));
    };
    let len: usize = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ApiError::bad_request("Inference-Header-Content-Length is not a number"))?;
    if len > body.len() {
        return Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {len} but the body has {} bytes",
            body.len()
        )));
    }
    let mut json = body;
    let binary = json.split_off(len);
    Ok((json, binary))
}

/// Little-endian f32 values from `bytes`, which must hold exactly `count` of them.
pub fn f32s(bytes: &[u8], count: usize, input: &str) -> Result<Vec<f32>, ApiError> {
    if bytes.len() != count * 4 {
        return Err(ApiError::bad_request(format!(
            "input {input:?}: binary_data_size is {} bytes, its shape needs {} FP32 values ({} bytes)",
            bytes.len(),
            count,
            count * 4
        )));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Raw little-endian bytes of an output tensor.
pub fn encode(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_splits_json_from_tensor_bytes_and_lies_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, "2".parse().unwrap());
        let (json, bin) = split(&headers, Bytes::from_static(b"{}\x00\x00\x80\x3f")).unwrap();
        assert_eq!(&json[..], b"{}");
        assert_eq!(f32s(&bin, 1, "x").unwrap(), vec![1.0]);
        assert!(f32s(&bin, 2, "x").is_err());
        headers.insert(HEADER, "99".parse().unwrap());
        assert!(split(&headers, Bytes::from_static(b"{}")).is_err());
        headers.insert(HEADER, "x".parse().unwrap());
        assert!(split(&headers, Bytes::from_static(b"{}")).is_err());
    }
}
