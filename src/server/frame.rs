//! Kafka framing: `[i32 length][header][body]`. Requests are checked for completeness and
//! size before they are parsed; responses are encoded with their header and length.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

/// Why a connection is closed instead of answered.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("request of {0} bytes exceeds the {1}-byte limit")]
    TooLarge(i64, usize),
    #[error("request frame of {0} bytes is too short for a request header")]
    TooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot encode the {api:?} v{version} response: {reason}")]
    Encode { api: ApiKey, version: i16, reason: String },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// A parsed request header with the body bytes that follow it.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub header: RequestHeader,
    pub body: Bytes,
    /// The client's address as Kafka reports it ("/ip"), for group member descriptions.
    pub client_host: String,
}

/// Reads the length prefix of a frame, if 4 bytes are present; checks the size limit.
pub fn frame_length(buffer: &[u8], request_bytes_max: usize) -> Result<Option<usize>, FrameError> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
    if length < 0 || length as usize > request_bytes_max {
        return Err(FrameError::TooLarge(i64::from(length), request_bytes_max));
    }
    Ok(Some(length as usize))
}

/// The api key and version at the start of a request frame (no length prefix).
pub fn peek_api(frame: &[u8]) -> Result<(i16, i16), FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::TooShort(frame.len()));
    }
    Ok((i16::from_be_bytes([frame[0], frame[1]]), i16::from_be_bytes([frame[2], frame[3]])))
}

/// Parses the request header of a frame whose api key and version are known.
pub fn parse_header(mut frame: Bytes, api_key: ApiKey, api_version: i16) -> Result<Request, FrameError> {
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| FrameError::Malformed {
        api: api_key,
        version: api_version,
        reason: e.to_string(),
    })?;
    Ok(Request { api_key, api_version, header, body: frame, client_host: String::new() })
}

/// Decodes a request body. Bytes after the body are ignored, as Kafka brokers do: some
/// clients (librdkafka's Metadata v12) send fields from neighbouring versions.
pub fn decode_body<T: Decodable>(request: &Request) -> Result<T, FrameError> {
    let mut body = request.body.clone();
    let decoded = T::decode(&mut body, request.api_version).map_err(|e| FrameError::Malformed {
        api: request.api_key,
        version: request.api_version,
        reason: e.to_string(),
    })?;
    if !body.is_empty() {
        tracing::debug!(api = ?request.api_key, version = request.api_version, trailing = body.len(), "ignoring trailing request bytes");
    }
    Ok(decoded)
}

/// Encodes `[length][response header][body]`. Fails (and the connection closes) only if a
/// handler set a field that does not exist at the request's version.
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut out, api_key.response_header_version(api_version)).expect("response headers always encode");
    body.encode(&mut out, api_version).map_err(|e| FrameError::Encode {
        api: api_key,
        version: api_version,
        reason: e.to_string(),
    })?;
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = frame_length(&bytes, 1 << 20);
            if let Ok((key, version)) = peek_api(&bytes) {
                if let Ok(api) = ApiKey::try_from(key) {
                    if let Ok(request) = parse_header(Bytes::from(bytes.clone()), api, version) {
                        let _ = super::super::handlers::decode_any(&request);
                    }
                }
            }
        }
    }

    /// A well-formed header of a supported API and version, then arbitrary body bytes.
    fn supported_request() -> impl Strategy<Value = Vec<u8>> {
        let supported = super::super::handlers::SUPPORTED;
        (0..supported.len(), any::<u16>(), any::<i32>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(
            move |(index, pick, correlation_id, body)| {
                let api = supported[index];
                let version = api.min + (pick % (api.max - api.min + 1) as u16) as i16;
                let mut out = Vec::new();
                out.extend_from_slice(&(api.key as i16).to_be_bytes());
                out.extend_from_slice(&version.to_be_bytes());
                out.extend_from_slice(&correlation_id.to_be_bytes());
                out.extend_from_slice(&1i16.to_be_bytes());
                out.push(b'x');
                if api.key.request_header_version(version) >= 2 {
                    out.push(0); // no tagged fields
                }
                out.extend_from_slice(&body);
                out
            },
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_of_supported_requests_never_panic(frame in supported_request()) {
            let (key, version) = peek_api(&frame).unwrap();
            let api = ApiKey::try_from(key).unwrap();
            let request = parse_header(Bytes::from(frame), api, version).unwrap();
            let _ = super::super::handlers::decode_any(&request);
        }
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused() {
        assert!(frame_length(&[0, 0, 0, 10], 5).is_err());
        assert!(frame_length(&[0xff, 0xff, 0xff, 0xff], 5).is_err());
        assert_eq!(frame_length(&[0, 0, 0, 5], 5).unwrap(), Some(5));
        assert_eq!(frame_length(&[0, 0], 5).unwrap(), None);
    }
}
