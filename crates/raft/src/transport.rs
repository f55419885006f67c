//! Raft messages between managers over gRPC: one long-lived client stream per peer for ordinary
//! messages, and snapshots cut into chunks on a separate call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use shoal_proto::v1::raft_transport_client::RaftTransportClient;
use shoal_proto::v1::raft_transport_server::RaftTransport;
use shoal_proto::v1::{RaftAck, RaftBatch, SnapshotChunk};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::Members;
use crate::node::RaftHandle;

/// Where the engine's outgoing messages go. `send` must not block.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, msgs: Vec<Message>);
    fn set_members(&self, members: &Members);
}

/// Batches (one per Ready) queued on a peer's stream before messages are dropped.
const PEER_QUEUE: usize = 1024;
const SNAPSHOT_QUEUE: usize = 4;
/// Batches kept for a peer while its connection is being made.
const WAITING_BATCHES: usize = 256;
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Largest snapshot a manager accepts (guards memory against a misbehaving peer).
const MAX_SNAPSHOT_BYTES: usize = 2 << 30;

/// Reports a peer's failures back to the raft node without knowing its output type.
pub trait Feedback: Send + Sync + 'static {
    fn unreachable(&self, peer: u64);
    /// The peer's port refused the connection: its process is gone (a partition times out
    /// instead), so a follower need not wait an election timeout to replace a dead leader.
    fn peer_down(&self, peer: u64);
    fn snapshot_done(&self, peer: u64, ok: bool);
}

impl<O: Send + 'static> Feedback for RaftHandle<O> {
    fn unreachable(&self, peer: u64) {
        self.report_unreachable(peer);
    }
    fn peer_down(&self, peer: u64) {
        self.report_peer_down(peer);
    }
    fn snapshot_done(&self, peer: u64, ok: bool) {
        self.report_snapshot(peer, ok);
    }
}

struct Peer {
    addr: String,
    /// Snapshots, sent by the peer's connection task on a call of their own.
    queue: mpsc::Sender<Message>,
    /// The message stream to the peer: ordinary messages go straight into it from the raft
    /// thread, one task hop fewer on every commit's path.
    stream: Arc<Mutex<Outbox>>,
}

/// Where the raft thread puts a peer's ordinary messages.
#[derive(Default)]
struct Outbox {
    /// The open stream, once connected.
    open: Option<mpsc::Sender<RaftBatch>>,
    /// Batches sent while connecting (e.g. the first votes after a restart), handed to the
    /// stream once it opens; dropped if the connection fails.
    waiting: Vec<RaftBatch>,
}

impl Outbox {
    fn push(&mut self, batch: RaftBatch) -> bool {
        match &self.open {
            Some(open) => open.try_send(batch).is_ok(),
            None if self.waiting.len() < WAITING_BATCHES => {
                self.waiting.push(batch);
                true
            }
            None => false,
        }
    }

    fn opened(&mut self, open: mpsc::Sender<RaftBatch>) {
        for batch in self.waiting.drain(..) {
            let _ = open.try_send(batch);
        }
        self.open = Some(open);
    }

    fn closed(&mut self) {
        self.open = None;
        self.waiting.clear();
    }
}

pub struct GrpcTransport {
    me: u64,
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<u64, Peer>>,
    feedback: Arc<Mutex<Option<Arc<dyn Feedback>>>>,
    /// This manager's certificate, presented to its peers (mutual TLS).
    tls: shoal_tls::ClientConfig,
}

impl GrpcTransport {
    /// Must be called inside a tokio runtime; peer connections run on it.
    pub fn new(me: u64, tls: shoal_tls::ClientConfig) -> Arc<Self> {
        Arc::new(GrpcTransport {
            me,
            tls,
            runtime: tokio::runtime::Handle::current(),
            peers: Mutex::new(HashMap::new()),
            feedback: Arc::new(Mutex::new(None)),
        })
    }

    /// Connects failure reports to the node once it exists (the node needs the transport first).
    pub fn set_feedback(&self, feedback: Arc<dyn Feedback>) {
        *self.feedback.lock() = Some(feedback);
    }
}

impl Transport for GrpcTransport {
    fn send(&self, msgs: Vec<Message>) {
        let peers = self.peers.lock();
        let mut batches: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
        for msg in msgs {
            let to = msg.to;
            let Some(peer) = peers.get(&to) else {
                tracing::trace!(to, "no address for raft peer; dropping a message");
                continue;
            };
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                if peer.queue.try_send(msg).is_err() {
                    tracing::trace!(to, "raft peer queue full; dropping a snapshot");
                }
                continue;
            }
            match msg.write_to_bytes() {
                Ok(bytes) => batches.entry(to).or_default().push(bytes),
                Err(e) => tracing::warn!(to, error = %e, "raft message did not encode"),
            }
        }
        for (to, msgs) in batches {
            let Some(peer) = peers.get(&to) else { continue };
            if !peer.stream.lock().push(RaftBatch { from: self.me, to, msgs }) {
                // Not connected or backed up: raft retransmits, so dropping is safe.
                tracing::trace!(to, "raft peer not connected or backed up; dropping messages");
            }
        }
    }

    fn set_members(&self, members: &Members) {
        let mut peers = self.peers.lock();
        peers.retain(|id, peer| members.get(id).is_some_and(|m| m.addr == peer.addr));
        for (id, member) in members {
            if *id == self.me || peers.contains_key(id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE);
            let feedback = self.feedback.clone();
            let stream = Arc::new(Mutex::new(Outbox::default()));
            let link = PeerLink { me: self.me, to: *id, addr: member.addr.clone(), stream: stream.clone() };
            self.runtime.spawn(peer_loop(link, rx, feedback, self.tls.clone()));
            peers.insert(*id, Peer { addr: member.addr.clone(), queue: tx, stream });
        }
    }
}

fn report(feedback: &Arc<Mutex<Option<Arc<dyn Feedback>>>>, f: impl FnOnce(&dyn Feedback)) {
    if let Some(fb) = feedback.lock().clone() {
        f(fb.as_ref());
    }
}

struct PeerLink {
    me: u64,
    to: u64,
    addr: String,
    stream: Arc<Mutex<Outbox>>,
}

/// Keeps a peer's message stream open (reconnecting with backoff) and sends it snapshots.
async fn peer_loop(
    link: PeerLink,
    mut inbox: mpsc::Receiver<Message>,
    feedback: Arc<Mutex<Option<Arc<dyn Feedback>>>>,
    tls: shoal_tls::ClientConfig,
) {
    let PeerLink { me, to, addr, stream } = link;
    let url = shoal_tls::client::uri(&addr);
    let mut backoff = Duration::from_millis(50);
    let mut reachable = true;
    loop {
        let endpoint = match tonic::transport::Endpoint::from_shared(url.clone()) {
            // Keepalive pings find a connection that died silently (a partition, a peer that came
            // back with another address) within seconds, so the stream is re-opened.
            Ok(e) => e
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true),
            Err(e) => {
                tracing::error!(to, addr, error = %e, "invalid raft peer address");
                return;
            }
        };
        let channel = match shoal_tls::client::connect(endpoint, tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                report(&feedback, |f| f.unreachable(to));
                if reachable {
                    tracing::warn!(peer = to, addr, error = %e, "raft peer unreachable; retrying");
                    reachable = false;
                }
                if is_connection_refused(&e) {
                    // Jitter so two followers rarely campaign at the same instant (split vote).
                    let jitter = Duration::from_millis(rand::random::<u64>() % 120);
                    tokio::time::sleep(jitter).await;
                    report(&feedback, |f| f.peer_down(to));
                }
                // Drop what queued up while the peer was away; raft resends what matters.
                while inbox.try_recv().is_ok() {}
                stream.lock().closed();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                if inbox.is_closed() {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if !reachable {
            tracing::info!(peer = to, addr, "raft peer reachable again");
            reachable = true;
        }
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);
        let (batch_tx, batch_rx) = mpsc::channel::<RaftBatch>(PEER_QUEUE);
        let mut call_client = client.clone();
        let mut call =
            tokio::spawn(async move { call_client.send(tokio_stream::wrappers::ReceiverStream::new(batch_rx)).await });
        stream.lock().opened(batch_tx);
        loop {
            tokio::select! {
                msg = inbox.recv() => {
                    let Some(snapshot) = msg else {
                        stream.lock().closed();
                        return;
                    };
                    let ok = send_snapshot(&mut client, me, to, &snapshot).await;
                    if !ok {
                        tracing::warn!(to, "sending a raft snapshot failed");
                    }
                    report(&feedback, |f| f.snapshot_done(to, ok));
                }
                _ = &mut call => break,
            }
        }
        stream.lock().closed();
        call.abort();
        report(&feedback, |f| f.unreachable(to));
        tokio::time::sleep(backoff).await;
    }
}

fn is_connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = e.source();
    }
    false
}

async fn send_snapshot(
    client: &mut RaftTransportClient<tonic::transport::Channel>,
    me: u64,
    to: u64,
    msg: &Message,
) -> bool {
    let Ok(bytes) = msg.write_to_bytes() else { return false };
    let total = bytes.len();
    let chunks: Vec<SnapshotChunk> = if total == 0 {
        vec![SnapshotChunk { from: me, to, offset: 0, data: Vec::new(), last: true }]
    } else {
        bytes
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, chunk)| SnapshotChunk {
                from: me,
                to,
                offset: (i * SNAPSHOT_CHUNK) as u64,
                data: chunk.to_vec(),
                last: (i + 1) * SNAPSHOT_CHUNK >= total,
            })
            .collect()
    };
    tracing::info!(to, bytes = total, chunks = chunks.len(), "sending raft snapshot");
    client.install_snapshot(tokio_stream::iter(chunks)).await.is_ok()
}

/// The server side: decodes peers' messages and steps them into the local node.
pub struct RaftTransportService<O> {
    me: u64,
    node: RaftHandle<O>,
}

impl<O: Send + 'static> RaftTransportService<O> {
    pub fn new(me: u64, node: RaftHandle<O>) -> Self {
        RaftTransportService { me, node }
    }
}

#[tonic::async_trait]
impl<O: Send + Sync + 'static> RaftTransport for RaftTransportService<O> {
    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            if batch.to != self.me {
                tracing::warn!(to = batch.to, me = self.me, "raft batch addressed to another manager");
                continue;
            }
            for bytes in batch.msgs {
                match Message::parse_from_bytes(&bytes) {
                    Ok(msg) if msg.from == batch.from => self.node.step(msg),
                    Ok(msg) => tracing::warn!(from = msg.from, batch_from = batch.from, "raft message sender mismatch"),
                    Err(e) => tracing::warn!(from = batch.from, error = %e, "malformed raft message dropped"),
                }
            }
        }
        Ok(Response::new(RaftAck {}))
    }

    async fn install_snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<RaftAck>, Status> {
        let mut stream = request.into_inner();
        let mut data = Vec::new();
        let mut from = None;
        while let Some(chunk) = stream.message().await? {
            if chunk.to != self.me {
                return Err(Status::invalid_argument("snapshot addressed to another manager"));
            }
            if chunk.offset as usize != data.len() || from.is_some_and(|f| f != chunk.from) {
                return Err(Status::invalid_argument("snapshot chunks out of order"));
            }
            from = Some(chunk.from);
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            data.extend_from_slice(&chunk.data);
            if chunk.last {
                let msg = Message::parse_from_bytes(&data)
                    .map_err(|e| Status::invalid_argument(format!("malformed snapshot message: {e}")))?;
                if msg.get_msg_type() != MessageType::MsgSnapshot {
                    return Err(Status::invalid_argument("not a snapshot message"));
                }
                self.node.step(msg);
                return Ok(Response::new(RaftAck {}));
            }
        }
        Err(Status::invalid_argument("snapshot stream ended before its last chunk"))
    }
}
