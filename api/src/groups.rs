//! Consumer-group administration: list, describe (members and committed offsets),
//! delete, and commit offsets for a group (as `kafka-consumer-groups.sh` does).

use std::collections::BTreeMap;

use bytes::Buf;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DeleteGroupsRequest, DescribeGroupsRequest, GroupId,
    ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use crate::admin::Admin;
use crate::consumer::TopicPartition;
use crate::error::ClientError;
use crate::net::BrokerConnection;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// Group id.
    pub group_id: String,
    /// Protocol type (`consumer`, `connect`, ...).
    pub protocol_type: String,
    /// State (`Stable`, `Empty`, ...).
    pub state: String,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// `group.instance.id`.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub host: String,
    /// Assigned partitions (decoded for `consumer` groups).
    pub assignment: Vec<TopicPartition>,
}

/// A described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State.
    pub state: String,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol (assignor).
    pub protocol: String,
    /// Members.
    pub members: Vec<GroupMember>,
}

impl Admin {
    async fn coordinator(&self, group: &str) -> Result<BrokerConnection, ClientError> {
        let mut attempt = 0;
        let (host, port) = loop {
            attempt += 1;
            match crate::membership::find_coordinator(self.cluster(), group).await {
                Ok(n) => break n,
                Err(e) if e.is_retriable() && attempt < 50 => {
                    tokio::time::sleep(self.cluster().config().retry_backoff).await;
                }
                Err(e) => return Err(e),
            }
        };
        self.cluster()
            .connection_to(&format!("{host}:{port}"))
            .await
    }

    /// Every group.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        let mut out = Vec::new();
        for b in self.cluster().brokers().await {
            let conn = self.cluster().connection(b.id).await?;
            let resp = conn.send(&ListGroupsRequest::default()).await?;
            if let Some(e) = ClientError::from_code(resp.error_code, "list groups") {
                return Err(e);
            }
            out.extend(resp.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.0.as_str().to_string(),
                protocol_type: g.protocol_type.as_str().to_string(),
                state: g.group_state.as_str().to_string(),
            }));
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// A group's state and members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let conn = self.coordinator(group).await?;
        let resp = conn
            .send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))]))
            .await?;
        let g = resp
            .groups
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Protocol("empty DescribeGroups".into()))?;
        if let Some(e) = ClientError::from_code(g.error_code, format!("describe group {group}")) {
            return Err(e);
        }
        let consumer = g.protocol_type.as_str() == "consumer";
        let members = g
            .members
            .into_iter()
            .map(|m| {
                let mut assignment = Vec::new();
                if consumer && m.member_assignment.len() >= 2 {
                    let mut b = m.member_assignment.clone();
                    let version = b.get_i16();
                    if let Ok(a) = ConsumerProtocolAssignment::decode(&mut b, version.clamp(0, 3)) {
                        for tp in a.assigned_partitions {
                            for p in tp.partitions {
                                assignment.push(TopicPartition::new(tp.topic.0.as_str(), p));
                            }
                        }
                    }
                }
                GroupMember {
                    member_id: m.member_id.as_str().to_string(),
                    instance_id: m.group_instance_id.map(|i| i.as_str().to_string()),
                    client_id: m.client_id.as_str().to_string(),
                    host: m.client_host.as_str().to_string(),
                    assignment,
                }
            })
            .collect();
        Ok(GroupDescription {
            group_id: group.to_string(),
            state: g.group_state.as_str().to_string(),
            protocol_type: g.protocol_type.as_str().to_string(),
            protocol: g.protocol_data.as_str().to_string(),
            members,
        })
    }

    /// A group's committed offsets (all partitions it committed for).
    pub async fn list_group_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<TopicPartition, i64>, ClientError> {
        let conn = self.coordinator(group).await?;
        let version = conn
            .version_for::<OffsetFetchRequest>()
            .map(|v| v.min(7))
            .ok_or_else(|| ClientError::Unsupported("OffsetFetch".into()))?;
        let resp = conn
            .send_at(
                &OffsetFetchRequest::default()
                    .with_group_id(GroupId(sb(group)))
                    .with_topics(None),
                version,
            )
            .await?;
        if let Some(e) = ClientError::from_code(resp.error_code, format!("offsets of {group}")) {
            return Err(e);
        }
        let mut out = BTreeMap::new();
        for t in resp.topics {
            for p in t.partitions {
                if p.committed_offset >= 0 {
                    out.insert(
                        TopicPartition::new(t.name.0.as_str(), p.partition_index),
                        p.committed_offset,
                    );
                }
            }
        }
        Ok(out)
    }

    /// Commits offsets for a group with no active members (offset resets).
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), ClientError> {
        let conn = self.coordinator(group).await?;
        // A commit outside any generation, as for simple consumers.
        let req = crate::membership::offset_commit_request(group, -1, "", offsets);
        let version = conn
            .version_for::<OffsetCommitRequest>()
            .map(|v| v.min(9))
            .ok_or_else(|| ClientError::Unsupported("OffsetCommit".into()))?;
        crate::membership::check_commit_response(conn.send_at(&req, version).await?)?;
        Ok(())
    }

    /// Deletes groups (they must have no members).
    pub async fn delete_groups(&self, groups: &[String]) -> Result<(), ClientError> {
        for g in groups {
            let conn = self.coordinator(g).await?;
            let resp = conn
                .send(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(g))]))
                .await?;
            for r in resp.results {
                if let Some(e) = ClientError::from_code(r.error_code, format!("delete group {g}")) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
