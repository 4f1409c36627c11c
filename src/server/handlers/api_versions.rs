//! ApiVersions (key 18), versions 0-4. Advertises exactly `handlers::SUPPORTED`.
//! An unsupported ApiVersions version gets a v0 response with UNSUPPORTED_VERSION and the
//! supported ranges, so the client can retry with a version we speak (KIP-511).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Encodable;

use std::rc::Rc;

use super::{ApiSupport, SUPPORTED};
use crate::shard::ShardContext;
use crate::server::frame::{encode_response, FrameError, Request};

pub const SUPPORT: ApiSupport = ApiSupport::new(ApiKey::ApiVersions, 0, 4);

fn response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(error_code).with_api_keys(
        SUPPORTED
            .iter()
            .map(|s| ApiVersion::default().with_api_key(s.key as i16).with_min_version(s.min).with_max_version(s.max))
            .collect(),
    )
}

pub async fn handle(_ctx: &Rc<ShardContext>, request: &Request) -> Result<Bytes, FrameError> {
    // The body carries only the client's software name/version (v3+); nothing to check
    // beyond it being well formed.
    let _: kafka_protocol::messages::ApiVersionsRequest = crate::server::frame::decode_body(request)?;
    encode_response(ApiKey::ApiVersions, request.api_version, request.header.correlation_id, &response(0))
}

/// The KIP-511 answer to an ApiVersions request of a version we do not speak: header v0,
/// body v0, error UNSUPPORTED_VERSION, and our ranges.
pub fn unsupported_version_response(correlation_id: i32) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    out.put_i32(correlation_id);
    response(ResponseError::UnsupportedVersion.code()).encode(&mut out, 0).expect("v0 ApiVersions encodes");
    let length = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&length.to_be_bytes());
    out.freeze()
}
