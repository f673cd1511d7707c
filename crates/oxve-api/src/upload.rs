//! `multipart/form-data` bodies. Text fields become parameters; the one
//! file of an upload method is handed to the handler as a stream, so a
//! large ISO goes straight to its storage instead of memory or `/tmp`.

use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use bytes::Bytes;
use serde_json::{Map, Value};

/// Largest text field accepted in a multipart body.
const MAX_FIELD: usize = 64 * 1024;

/// The file part of an upload, not yet read.
pub struct Upload {
    /// The client's file name (its last path component).
    pub file_name: String,
    field: multer::Field<'static>,
    rest: multer::Multipart<'static>,
}

impl Upload {
    /// The next chunk of the file; `None` at its end.
    pub async fn chunk(&mut self) -> ApiResult<Option<Bytes>> {
        self.field
            .chunk()
            .await
            .map_err(|e| ApiError::bad_request(format!("upload aborted: {e}")))
    }

    /// Reads and drops the rest of the body, so that an early refusal
    /// reaches a client still sending instead of a reset connection.
    pub async fn discard(mut self) {
        while let Ok(Some(_)) = self.chunk().await {}
        while let Ok(Some(field)) = self.rest.next_field().await {
            let mut field = field;
            while let Ok(Some(_)) = field.chunk().await {}
        }
    }

    /// Text fields that came after the file (clients may send them last).
    pub async fn trailing_fields(mut self) -> ApiResult<Map<String, Value>> {
        let mut out = Map::new();
        while let Some(field) = next_field(&mut self.rest).await? {
            let name = field.name().unwrap_or_default().to_string();
            out.insert(name, Value::String(read_text(field).await?));
        }
        Ok(out)
    }
}

/// The boundary, when `content_type` is `multipart/form-data`.
pub fn boundary(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    if !ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        return None;
    }
    multer::parse_boundary(ct).ok()
}

/// Reads text fields up to the first file part. With `stream_file` the
/// file is returned unread (its name also becomes the `file_field`
/// parameter, as upstream takes the upload's `filename` from the part);
/// without it a file part is refused.
pub async fn read(
    body: Body,
    boundary: String,
    stream_file: bool,
) -> ApiResult<(Map<String, Value>, Option<Upload>)> {
    let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut params = Map::new();
    while let Some(field) = next_field(&mut multipart).await? {
        let name = field.name().unwrap_or_default().to_string();
        if let Some(file_name) = field.file_name() {
            if !stream_file {
                return Err(ApiError::bad_request(format!(
                    "file upload in field '{name}' is not accepted by this method"
                )));
            }
            // Kept as sent: a name with a path in it is refused by the handler.
            let file_name = file_name.to_string();
            params.insert(name, Value::String(file_name.clone()));
            return Ok((
                params,
                Some(Upload {
                    file_name,
                    field,
                    rest: multipart,
                }),
            ));
        }
        params.insert(name, Value::String(read_text(field).await?));
    }
    Ok((params, None))
}

async fn next_field(
    multipart: &mut multer::Multipart<'static>,
) -> ApiResult<Option<multer::Field<'static>>> {
    multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))
}

async fn read_text(mut field: multer::Field<'static>) -> ApiResult<String> {
    let mut data = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
    {
        if data.len() + chunk.len() > MAX_FIELD {
            return Err(ApiError::bad_request("multipart text field too large"));
        }
        data.extend_from_slice(&chunk);
    }
    String::from_utf8(data).map_err(|_| ApiError::bad_request("multipart text field is not UTF-8"))
}
