//! Controller error responses: always `{"error":{"code","message"}}`, with
//! the status from the code, and never internals in the message.

use tapio_wire::{ErrorBody, ErrorCode, WireError};

pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        // Bound what an error can echo back.
        if message.len() > 300 {
            let mut cut = 300;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        ApiError { code, message }
    }

    pub fn status(&self) -> u16 {
        self.code.http_status()
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody::new(self.code, self.message.clone())).unwrap_or_default()
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_and_bounds() {
        let e = ApiError::new(ErrorCode::UnknownEndpoint, "x".repeat(1000));
        assert_eq!(e.status(), 404);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "UNKNOWN_ENDPOINT");
        assert!(v["error"]["message"].as_str().unwrap().len() < 310);
    }
}
