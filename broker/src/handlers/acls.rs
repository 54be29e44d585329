//! DescribeAcls, CreateAcls, DeleteAcls. Runnel has no authorizer (every client may do
//! everything), so it answers these as Apache Kafka does when `authorizer.class.name` is
//! unset: SECURITY_DISABLED, with Kafka's messages, for the request or for each creation
//! and filter in it. `kafka-acls` then reports a SecurityDisabledException rather than an
//! unsupported API.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};

use super::sb;

const DISABLED: &str = "No Authorizer is configured.";

/// Answers DescribeAcls.
pub fn describe(_req: DescribeAclsRequest) -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(ResponseError::SecurityDisabled.code())
        .with_error_message(Some(sb("No Authorizer is configured on the broker")))
}

/// Answers CreateAcls: one failed result per creation.
pub fn create(req: CreateAclsRequest) -> CreateAclsResponse {
    CreateAclsResponse::default().with_results(
        req.creations
            .iter()
            .map(|_| {
                AclCreationResult::default()
                    .with_error_code(ResponseError::SecurityDisabled.code())
                    .with_error_message(Some(sb(DISABLED)))
            })
            .collect(),
    )
}

/// Answers DeleteAcls: one failed result per filter.
pub fn delete(req: DeleteAclsRequest) -> DeleteAclsResponse {
    DeleteAclsResponse::default().with_filter_results(
        req.filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(ResponseError::SecurityDisabled.code())
                    .with_error_message(Some(sb(DISABLED)))
            })
            .collect(),
    )
}
