//! DescribeCluster.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{acl_ops, sb};
use crate::broker::Broker;

/// Endpoint type "brokers".
const ENDPOINT_BROKERS: i8 = 1;

/// Answers DescribeCluster.
pub fn handle(broker: &Broker, req: DescribeClusterRequest) -> DescribeClusterResponse {
    let resp = DescribeClusterResponse::default()
        .with_cluster_id(sb(&broker.cluster_id))
        .with_controller_id(BrokerId(broker.config.node_id))
        .with_endpoint_type(req.endpoint_type);
    if req.endpoint_type != ENDPOINT_BROKERS {
        return resp
            .with_error_code(ResponseError::MismatchedEndpointType.code())
            .with_error_message(Some(sb("The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER")));
    }
    let brokers = broker
        .config
        .advertised_listeners
        .first()
        .map(|l| {
            vec![
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(broker.config.node_id))
                    .with_host(sb(&l.host))
                    .with_port(l.port as i32),
            ]
        })
        .unwrap_or_default();
    resp.with_brokers(brokers)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations {
            acl_ops::cluster_all()
        } else {
            acl_ops::NOT_REQUESTED
        })
}
