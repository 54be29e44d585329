//! ApiVersions: the version ranges this broker serves (KIP-511 fallback in `server`).

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Broker;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::SUPPORTED_APIS;

/// Every advertised API with its range.
pub fn advertised() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(k, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

/// Answers ApiVersions. From v3 on it also names the features: `transaction.version`
/// (supported 0-2, finalized at `runnel.transaction.version`), which is how clients
/// decide to use transactions v2.
pub fn handle(broker: &Broker, _req: &ApiVersionsRequest, version: i16) -> ApiVersionsResponse {
    let resp = ApiVersionsResponse::default()
        .with_error_code(0)
        .with_api_keys(advertised());
    if version < 3 {
        return resp;
    }
    let level = broker.config.txn.transaction_version;
    let finalized = if level > 0 {
        vec![
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
                .with_min_version_level(level)
                .with_max_version_level(level),
        ]
    } else {
        vec![]
    };
    resp.with_supported_features(vec![
        SupportedFeatureKey::default()
            .with_name(StrBytes::from_static_str(TRANSACTION_VERSION))
            .with_min_version(0)
            .with_max_version(2),
    ])
    .with_finalized_features_epoch(1)
    .with_finalized_features(finalized)
}

/// The feature clients look at to use transactions v2 (KIP-890).
pub const TRANSACTION_VERSION: &str = "transaction.version";

/// The KIP-511 answer to a too-new ApiVersions request: error 35 plus our ranges, to be
/// encoded at v0 so any client can read it.
pub fn unsupported_version() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(kafka_protocol::ResponseError::UnsupportedVersion.code())
        .with_api_keys(advertised())
}
