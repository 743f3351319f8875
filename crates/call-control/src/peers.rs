//! Requests to the other nodes of a cluster: a command for a call that another node runs
//! goes to that node's HTTP API, at the address it advertises in its lease row
//! (`[node] advertised_address`). The caller's own credentials go with it (every node
//! reads the same keys), and a header that marks it forwarded, so that it is never
//! forwarded again.

use std::time::Duration;

use tracing::info;

use crate::model::Call;
use crate::store::{Store, StoreError};

/// The header a forwarded request carries: the id of the node that forwarded it.
pub const FORWARDED_BY: &str = "x-dialcore-forwarded-by";

/// How long the owner node has to answer a forwarded command.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Why a command could not reach the node that runs a call.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The node has no lease row (it stopped, or was lost and its calls are being ended).
    #[error("call {call_id} runs on node {node_id}, which is not running")]
    NodeGone {
        /// The call.
        call_id: String,
        /// Its node.
        node_id: String,
    },
    /// The node advertises no address other nodes can reach.
    #[error("call {call_id} runs on node {node_id}, which advertises no address ([node] advertised_address)")]
    NoAddress {
        /// The call.
        call_id: String,
        /// Its node.
        node_id: String,
    },
    /// The node did not answer.
    #[error("node {node_id} at {address} did not answer: {source}")]
    Unreachable {
        /// Its node.
        node_id: String,
        /// Where it was asked.
        address: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The store could not say where the node is.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the owner node answered.
#[derive(Debug)]
pub struct PeerReply {
    /// Its status code.
    pub status: reqwest::StatusCode,
    /// Its body (JSON in the API's formats).
    pub body: bytes::Bytes,
}

/// The client of the other nodes.
#[derive(Clone)]
pub struct Peers {
    client: reqwest::Client,
    /// For bodies that take long (recordings): only connecting is timed.
    streaming: reqwest::Client,
    own_id: String,
}

fn client(timed: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("dialcore-node/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let builder = if timed {
        builder.timeout(TIMEOUT)
    } else {
        builder
    };
    builder.build().unwrap_or_default()
}

impl Peers {
    /// A client for node `own_id`.
    pub fn new(own_id: String) -> Peers {
        Peers {
            client: client(true),
            streaming: client(false),
            own_id,
        }
    }

    /// The node other than this one that runs `call`, if it is not over and has a node.
    pub fn owner_elsewhere<'c>(&self, call: &'c Call) -> Option<&'c str> {
        call.node_id
            .as_deref()
            .filter(|node| *node != self.own_id && !call.status.is_terminal())
    }

    /// The node other than this one that ran (or runs) `call`, if it has a node.
    pub fn recorder_elsewhere<'c>(&self, call: &'c Call) -> Option<&'c str> {
        call.node_id.as_deref().filter(|node| *node != self.own_id)
    }

    /// Where node `node_id`'s HTTP API is, for a request about `call`.
    async fn address_of(
        &self,
        store: &Store,
        node_id: &str,
        call: &Call,
    ) -> Result<String, PeerError> {
        let node = store
            .nodes()
            .await?
            .into_iter()
            .find(|node| node.id == node_id)
            .ok_or_else(|| PeerError::NodeGone {
                call_id: call.id.clone(),
                node_id: node_id.to_owned(),
            })?;
        node.advertised_address.ok_or_else(|| PeerError::NoAddress {
            call_id: call.id.clone(),
            node_id: node_id.to_owned(),
        })
    }

    /// Asks node `node_id` to hang up `call` (`POST /api/public/v1/calls/{id}/hangup`) with
    /// the `authorization` the request to this node came with; answers what it answered.
    pub async fn hang_up(
        &self,
        store: &Store,
        node_id: &str,
        call: &Call,
        authorization: &str,
    ) -> Result<PeerReply, PeerError> {
        let address = self.address_of(store, node_id, call).await?;
        let url = format!("http://{address}/api/public/v1/calls/{}/hangup", call.id);
        let unreachable = |source| PeerError::Unreachable {
            node_id: node_id.to_owned(),
            address: address.clone(),
            source,
        };
        let response = self
            .client
            .post(&url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(FORWARDED_BY, &self.own_id)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        info!(call_id = %call.id, node_id, %status, "hang-up forwarded to the call's node");
        Ok(PeerReply { status, body })
    }

    /// Asks node `node_id` for `call`'s recording (`GET /api/public/v1/calls/{id}/recording`)
    /// with the `authorization` and the range and conditional `headers` the request to this
    /// node came with; answers its response with the body unread, to be streamed through
    /// (a recording is not held in memory). Only connecting is timed.
    pub async fn recording(
        &self,
        store: &Store,
        node_id: &str,
        call: &Call,
        authorization: &str,
        headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    ) -> Result<reqwest::Response, PeerError> {
        let address = self.address_of(store, node_id, call).await?;
        let url = format!("http://{address}/api/public/v1/calls/{}/recording", call.id);
        let mut request = self
            .streaming
            .get(&url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(FORWARDED_BY, &self.own_id);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
            .send()
            .await
            .map_err(|source| PeerError::Unreachable {
                node_id: node_id.to_owned(),
                address,
                source,
            })
    }
}
