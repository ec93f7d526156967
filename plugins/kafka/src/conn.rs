//! One blocking TCP connection to one broker (WASI sockets inside the plugin): request framing,
//! correlation ids, API version negotiation. Messages are encoded and decoded by
//! `kafka-protocol`; every wait is bounded by the socket timeouts.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::error::{KafkaError, Result};

/// The newest version of each API this client speaks (it decodes every field it uses in all
/// versions from 4 on); the broker's newest is used when lower.
const MAX_VERSIONS: &[(ApiKey, i16, i16)] = &[
    // (api, oldest we accept, newest we use)
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ListOffsets, 1, 7),
    // Fetch v13 names topics by id (a recreated topic's old id is refused, not read under the
    // old offsets); requests for topics without a known id use v12.
    (ApiKey::Fetch, 4, 13),
];

/// A connection to one broker.
pub struct Connection {
    stream: TcpStream,
    /// `host:port`, for messages.
    pub peer: String,
    correlation: i32,
    /// The version to use per API key, negotiated at connect.
    versions: HashMap<i16, i16>,
    /// The largest response accepted (a hostile length prefix cannot make us allocate more).
    max_response: usize,
}

fn io_error(peer: &str, what: &str, e: std::io::Error) -> KafkaError {
    let hint = match e.kind() {
        ErrorKind::PermissionDenied => {
            " (the sandbox did not grant this address: list every broker of the cluster in \
             `bootstrap_servers` or in [capabilities] network)"
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => " (no answer in time)",
        ErrorKind::UnexpectedEof => " (the broker closed the connection)",
        _ => "",
    };
    KafkaError::Io {
        broker: peer.to_string(),
        message: format!("{what}: {e}{hint}"),
    }
}

impl Connection {
    /// Connects to `peer` (`host:port`) and negotiates API versions.
    pub fn connect(peer: &str, timeout: Duration, max_response: usize) -> Result<Connection> {
        let addresses: Vec<SocketAddr> = peer
            .to_socket_addrs()
            .map_err(|e| io_error(peer, "cannot resolve", e))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for address in &addresses {
            match TcpStream::connect_timeout(address, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(io_error(peer, "cannot connect", e)),
            }
        }
        let stream = stream.ok_or_else(|| {
            last.unwrap_or_else(|| KafkaError::Io {
                broker: peer.to_string(),
                message: "the name has no address".into(),
            })
        })?;
        let _ = stream.set_nodelay(true);
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| io_error(peer, "socket", e))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| io_error(peer, "socket", e))?;
        let mut conn = Connection {
            stream,
            peer: peer.to_string(),
            correlation: 0,
            versions: HashMap::new(),
            max_response,
        };
        conn.negotiate()?;
        Ok(conn)
    }

    fn negotiate(&mut self) -> Result<()> {
        let response = self.send_version(ApiVersionsRequest::default(), 0, None)?;
        if response.error_code != 0 {
            return Err(self.protocol(format!(
                "ApiVersions failed with error code {}",
                response.error_code
            )));
        }
        for (api, min, max) in MAX_VERSIONS {
            let key = *api as i16;
            let Some(theirs) = response.api_keys.iter().find(|k| k.api_key == key) else {
                return Err(self.protocol(format!("the broker does not support {api:?}")));
            };
            let version = theirs.max_version.min(*max);
            if version < *min || version < theirs.min_version {
                return Err(self.protocol(format!(
                    "no common version of {api:?}: the broker speaks {}..={}, we {min}..={max}",
                    theirs.min_version, theirs.max_version
                )));
            }
            self.versions.insert(key, version);
        }
        Ok(())
    }

    fn protocol(&self, message: String) -> KafkaError {
        KafkaError::Protocol {
            broker: self.peer.clone(),
            message,
        }
    }

    /// The negotiated version of `api`.
    pub fn version(&self, api: ApiKey) -> i16 {
        self.versions.get(&(api as i16)).copied().unwrap_or(0)
    }

    /// Sends `request` at the negotiated version and waits for its response; `read_timeout`
    /// replaces the socket's for this answer (a Fetch waits on the broker's side).
    pub fn send<R: Request>(
        &mut self,
        request: R,
        read_timeout: Option<Duration>,
    ) -> Result<R::Response> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| self.protocol("unknown API".into()))?;
        let version = self.version(api);
        self.send_version(request, version, read_timeout)
    }

    /// Sends `request` at `version` (at most the negotiated one).
    pub fn send_at<R: Request>(
        &mut self,
        request: R,
        version: i16,
        read_timeout: Option<Duration>,
    ) -> Result<R::Response> {
        self.send_version(request, version, read_timeout)
    }

    fn send_version<R: Request>(
        &mut self,
        request: R,
        version: i16,
        read_timeout: Option<Duration>,
    ) -> Result<R::Response> {
        self.correlation = self.correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("moonlink")));
        let mut body = BytesMut::with_capacity(256);
        body.put_i32(0);
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| self.protocol(format!("cannot encode a request: {e}")))?;
        let len = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&len.to_be_bytes());
        self.stream
            .write_all(&body)
            .map_err(|e| io_error(&self.peer, "cannot send", e))?;
        if let Some(t) = read_timeout {
            self.stream
                .set_read_timeout(Some(t))
                .map_err(|e| io_error(&self.peer, "socket", e))?;
        }
        let mut frame = self.read_frame()?;
        let header = ResponseHeader::decode(
            &mut frame,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .map_err(|e| self.protocol(format!("bad response header: {e}")))?;
        if header.correlation_id != self.correlation {
            return Err(self.protocol(format!(
                "response to request {} arrived for request {}",
                header.correlation_id, self.correlation
            )));
        }
        R::Response::decode(&mut frame, version).map_err(|e| {
            self.protocol(format!(
                "cannot decode a {api_key} response: {e}",
                api_key = R::KEY
            ))
        })
    }

    fn read_frame(&mut self) -> Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| io_error(&self.peer, "cannot read", e))?;
        let len = i32::from_be_bytes(len);
        if len < 0 || len as usize > self.max_response {
            return Err(self.protocol(format!(
                "response of {len} bytes (at most {} expected)",
                self.max_response
            )));
        }
        let mut frame = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| io_error(&self.peer, "cannot read", e))?;
        let frame = Bytes::from(frame);
        if frame.remaining() < 4 {
            return Err(self.protocol("response shorter than its header".into()));
        }
        Ok(frame)
    }
}
